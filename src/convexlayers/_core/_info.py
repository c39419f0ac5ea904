"""Per-call diagnostics exposed by every layer as ``layer.info``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convexlayers.solvers._base import SolverStatus


@dataclass(frozen=True)
class DerivativeInfo:
    """How the derivative system of each batch element was solved.

    Attributes:
        method: per element, "lu" (dense), "sparse_lu", or "lstsq" (the system was
            singular: least-squares, minimum-norm solution).
        residual: per element, relative residual ||J z − r|| / ||r|| of that solve.
            Large values mean the derivative is not well defined at this solution
            (non-unique or degenerate); the gradient is then a least-squares estimate.
        kkt_residual: per element, the relative KKT residual of the point the derivative
            was taken at (after polishing with refine="auto" or True).
    """

    method: tuple[str, ...]
    residual: np.ndarray
    kkt_residual: np.ndarray


@dataclass(frozen=True)
class SolveInfo:
    """Diagnostics of the last call of a layer.

    Attributes:
        solver: the backend used.
        status: per batch element, the solver status.
        iterations: per batch element, solver iterations.
        solve_time: per batch element, seconds in the solver.
        residual: per batch element, the relative KKT residual of the returned solution,
            ||N(x, y − s)|| / (1 + ||q|| + ||b||) with N the normal map (NaN if unsolved).
            Gradients are about as accurate as this is small.
        derivative: filled in by the last backward (or forward-mode) pass, else None.
    """

    solver: str
    status: tuple[SolverStatus, ...]
    iterations: np.ndarray
    solve_time: np.ndarray
    residual: np.ndarray
    derivative: DerivativeInfo | None = None

    @property
    def ok(self) -> bool:
        """Every element solved to full accuracy."""
        return all(s is SolverStatus.OPTIMAL for s in self.status)
