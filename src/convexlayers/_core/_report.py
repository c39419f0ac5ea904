"""What a call says about elements without an exact solution: errors and warnings."""

from __future__ import annotations

import warnings

import numpy as np

from convexlayers._core._info import SolveInfo
from convexlayers._errors import InaccurateSolutionWarning, SolverArgumentError, SolverError
from convexlayers.derivative import AbstractAdjoint, AbstractLinearSolver, ImplicitAdjoint
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


def check_warm_start(warm_start: object) -> bool:
    """Validate a layer call's ``warm_start``.

    Raises:
        SolverArgumentError: if it is not True or False.
    """
    if not isinstance(warm_start, bool | np.bool_):
        raise SolverArgumentError(
            f"warm_start: expected True (start from this layer's previous solution, element "
            f"by element) or False, received {warm_start!r}."
        )
    return bool(warm_start)


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


def report(info: SolveInfo, batched: bool, outputs: list[np.ndarray], on_failure: str,
           adjoint: AbstractAdjoint) -> None:
    """Raise for elements without a solution (unless ``on_failure="nan"``); warn for
    elements whose returned point is still inaccurate: with polished outputs, every
    element above the adjoint's target (after polishing and a tighter second solve);
    otherwise the elements the solver itself calls inaccurate.

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
    if adjoint.polishes_outputs:
        inexact = [b for b, st in enumerate(info.status)
                   if st.has_iterate and not info.residual[b] <= adjoint.target]
        if inexact:
            worst = float(np.nanmax(info.residual[inexact]))
            warnings.warn(
                f"{info.solver}: the solution of {_where(inexact, batched)} could not be made "
                f"exact (KKT residual up to {worst:.2g} after polishing and a second solve at "
                f"eps=1e-11; target {adjoint.target:g}; per element in layer.info.residual): "
                "outputs and derivatives there may be inaccurate, e.g. a solution that is not "
                "unique, a constraint that is only just active, an iteration limit reached "
                "(statuses in layer.info), or data of a tiny scale (the solver's tolerances "
                "are absolute: scale it to order one, or pass a smaller eps). Check the "
                "parameter values.",
                InaccurateSolutionWarning,
                stacklevel=4,
            )
        return
    inexact = [
        b for b, st in enumerate(info.status)
        if st in _INACCURATE and not info.residual[b] <= REFINE_ABOVE
    ]
    if inexact:
        warnings.warn(
            f"{info.solver} returned an inaccurate solution for {_where(inexact, batched)} "
            f"(KKT residual above {REFINE_ABOVE:g}; statuses in layer.info): the outputs may "
            "be inaccurate, and derivatives where polishing cannot repair them. Tighten the "
            "solver tolerance or raise its iteration limit (solver_args), or polish the "
            "outputs (the default, adjoint=ImplicitAdjoint(polish=True)).",
            InaccurateSolutionWarning,
            stacklevel=4,
        )


def make_adjoint(
    adjoint: AbstractAdjoint | None,
    linear_solver: AbstractLinearSolver | None,
    refine: bool | str | None,
) -> AbstractAdjoint:
    """The layer's adjoint from ``adjoint=`` or the 0.1 shorthands ``linear_solver``/``refine``.

    Raises:
        SolverArgumentError: on a bad value, or an adjoint given with a shorthand.
    """
    if adjoint is not None:
        if linear_solver is not None or refine is not None:
            raise SolverArgumentError(
                "adjoint: pass either adjoint=ImplicitAdjoint(linear_solver=..., polish=...) "
                "or the shorthands linear_solver=/refine=, not both."
            )
        if not isinstance(adjoint, AbstractAdjoint):
            raise SolverArgumentError(
                "adjoint: expected an AbstractAdjoint such as ImplicitAdjoint() from "
                f"convexlayers.derivative, received {adjoint!r}."
            )
        return adjoint
    if not any(refine is k or (type(refine) is type(k) and refine == k) for k in _REFINE):
        raise SolverArgumentError(
            f"refine: expected True, False or 'auto', received {refine!r}. (It is a "
            "shorthand: adjoint=ImplicitAdjoint(polish=...) is the full form.)"
        )
    if linear_solver is not None and not isinstance(linear_solver, AbstractLinearSolver):
        raise SolverArgumentError(
            "linear_solver: expected an AbstractLinearSolver such as DenseLU() or "
            f"SparseLU() from convexlayers.derivative, received {linear_solver!r}."
        )
    if linear_solver is None:
        return ImplicitAdjoint(polish=_REFINE[refine])
    return ImplicitAdjoint(linear_solver=linear_solver, polish=_REFINE[refine])


# refine= shorthand -> ImplicitAdjoint(polish=...); None: the default.
_REFINE: dict = {None: True, True: True, "auto": "derivative", False: False}
