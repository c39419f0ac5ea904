"""Exceptions and warnings raised by convexlayers.

Every error raised for bad input names the argument, says what was received
and what to do instead. All subclass :class:`ConvexLayersError`, and the
input errors also subclass :class:`ValueError` so generic handlers keep working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ConvexLayersError(Exception):
    """Base class of every error raised by convexlayers."""


class ProblemError(ConvexLayersError, ValueError):
    """The CVXPY problem, or the parameters/variables given for it, cannot make a layer."""


class ParameterError(ConvexLayersError, ValueError):
    """A parameter value passed to a layer call is invalid (count, shape, batch, value)."""


class SolverArgumentError(ConvexLayersError, ValueError):
    """A solver name or a ``solver_args`` entry is invalid."""


class SolverError(ConvexLayersError, RuntimeError):
    """The solver did not return a solution for some elements of the batch.

    Attributes:
        indices: batch indices that failed (``[0]`` for an unbatched call).
        statuses: the solver status of each failed element, aligned with ``indices``.
        outputs: the outputs of the whole batch as NumPy arrays, with NaN in the
            failed elements, so that nothing else in the batch is lost.
    """

    def __init__(
        self,
        message: str,
        indices: Sequence[int] = (),
        statuses: Sequence[Any] = (),
        outputs: Sequence[Any] = (),
    ) -> None:
        # Defaults let frameworks that rebuild an exception from its message (Keras)
        # keep the type.
        super().__init__(message)
        self.indices = list(indices)
        self.statuses = list(statuses)
        self.outputs = list(outputs)


class ExecutorError(ConvexLayersError, RuntimeError):
    """A chunk of the batch handed to an executor was lost (its task failed or timed out).

    Attributes:
        indices: the batch indices of that chunk.
    """

    def __init__(self, message: str, indices: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.indices = list(indices)


class ConvexLayersWarning(UserWarning):
    """Base class of warnings issued by convexlayers."""


class InaccurateSolutionWarning(ConvexLayersWarning):
    """The solver reported a solution of reduced accuracy that polishing did not repair."""
