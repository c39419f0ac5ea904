"""What a call says about elements without an exact solution: errors and warnings."""

from __future__ import annotations

import warnings

import numpy as np

from convexlayers._core._info import SolveInfo
from convexlayers._errors import InaccurateSolutionWarning, SolverArgumentError, SolverError
from convexlayers.solvers._base import SolverStatus

# Relative KKT residual above which refine="auto" polishes a solution, and above which
# a solve the solver itself calls inaccurate is reported as such.
REFINE_ABOVE = 1e-9

ON_FAILURE = ("raise", "nan")
_INACCURATE = (
    SolverStatus.OPTIMAL_INACCURATE, SolverStatus.MAX_ITERATIONS, SolverStatus.TIME_LIMIT
)


def check_on_failure(on_failure: object) -> str:
    """Validate an ``on_failure`` setting.

    Raises:
        SolverArgumentError: if it is not "raise" or "nan".
    """
    if on_failure not in ON_FAILURE:
        raise SolverArgumentError(
            f"on_failure: expected 'raise' (raise SolverError when a batch element has no "
            f"solution) or 'nan' (NaN outputs and zero gradients for those elements), "
            f"received {on_failure!r}."
        )
    return str(on_failure)


def _where(indices: list[int], batched: bool, statuses=None) -> str:
    if not batched:
        return "the problem" + (f" ({statuses[0].value})" if statuses else "")
    shown = indices[:20]
    if statuses is None:
        items = ", ".join(str(b) for b in shown)
    else:
        items = ", ".join(f"{b}: {st.value}" for b, st in zip(shown, statuses, strict=False))
    more = f", ... ({len(indices)} in all)" if len(indices) > len(shown) else ""
    return f"batch elements [{items}{more}]"


def report(info: SolveInfo, batched: bool, outputs: list[np.ndarray], on_failure: str) -> None:
    """Raise for elements without a solution (unless ``on_failure="nan"``); warn for
    elements whose returned point is still inaccurate.

    Raises:
        SolverError: some elements have no solution and ``on_failure == "raise"``.
    """
    failed = list(info.failed)
    if failed and on_failure == "raise":
        statuses = [info.status[b] for b in failed]
        raise SolverError(
            f"{info.solver} found no solution for {_where(failed, batched, statuses)}. Check "
            "that the parameter values make the problem feasible and bounded; the outputs of "
            "the other elements are in `err.outputs` (NaN where the solve failed). To keep "
            "training through such elements, pass on_failure='nan' to the layer or the call.",
            failed,
            statuses,
            outputs,
        )
    inexact = [
        b for b, st in enumerate(info.status)
        if st in _INACCURATE and not info.residual[b] <= REFINE_ABOVE
    ]
    if inexact:
        warnings.warn(
            f"{info.solver} returned an inaccurate solution for {_where(inexact, batched)} "
            f"(KKT residual above {REFINE_ABOVE:g}; statuses in layer.info): the outputs may "
            "be inaccurate, and derivatives where polishing cannot repair them. Tighten the "
            "solver tolerance or raise its iteration limit (solver_args), or pass refine=True "
            "to polish the outputs.",
            InaccurateSolutionWarning,
            stacklevel=4,
        )
