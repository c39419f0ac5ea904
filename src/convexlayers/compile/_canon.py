"""Canonicalization by CVXPY into our cone-program form.

CVXPY's reduction chain is built for a target "solver" that declares which
cones it accepts, whether it takes a quadratic objective and how it wants PSD
cones vectorized. We declare a pseudo-solver that describes exactly our
canonical form (see :mod:`convexlayers.cones`) and stop the chain before any
numeric data is produced: CVXPY returns the parametric cone program (sparse
tensors from parameters to problem data) and the chain that maps a solution
back to the user's variables and constraint duals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import cvxpy as cp
import cvxpy.settings as cps
from cvxpy.constraints import SOC, ExpCone, PowCone3D, SvecPSD
from cvxpy.error import DPPError, SolverError
from cvxpy.reductions.chain import Chain
from cvxpy.reductions.solvers.conic_solvers.conic_solver import ConicSolver
from cvxpy.utilities.psd_utils import TriangleKind

from convexlayers._errors import ProblemError

if TYPE_CHECKING:
    from cvxpy.constraints.constraint import Constraint

_CONE_CONSTRAINTS: dict[str, type[Constraint]] = {
    "soc": SOC, "exp": ExpCone, "power": PowCone3D, "psd": SvecPSD
}


class _Target(ConicSolver):
    """A CVXPY conic "solver" describing our canonical form restricted to ``cones``.

    A module-level class configured per instance, so that a problem whose CVXPY cache
    holds it (after we canonicalize it) still pickles.
    """

    # The ignores: CVXPY's base classes set the last three to None (an instance variable
    # of type None, to mypy). EXP_CONE_ORDER [0, 1, 2]: CVXPY's orientation is ours.
    MIP_CAPABLE = False
    PSD_TRIANGLE_KIND = TriangleKind.UPPER  # type: ignore[assignment]
    PSD_SQRT2_SCALING = True  # type: ignore[assignment]
    EXP_CONE_ORDER: ClassVar[list[int]] = [0, 1, 2]  # type: ignore[misc,assignment]

    def __init__(self, quadratic: bool, cones: frozenset[str]) -> None:
        super().__init__()
        self.quadratic = quadratic
        self.SUPPORTED_CONSTRAINTS = ConicSolver.SUPPORTED_CONSTRAINTS + [
            con for name, con in _CONE_CONSTRAINTS.items() if name in cones
        ]

    def name(self) -> str:
        return "CONVEXLAYERS_CANONICAL"

    def import_solver(self) -> None:
        return None

    def cite(self, data: Any) -> str:
        return ""

    def supports_quad_obj(self) -> bool:
        return self.quadratic

    def apply(self, problem: Any) -> tuple[dict, dict]:
        # Format the cone rows only; parameter values are never read.
        problem, data, inverse_data = self._prepare_data_and_inv_data(problem)
        return data, inverse_data

    def solve_via_data(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("the canonical target only canonicalizes")

    def invert(self, solution: Any, inverse_data: Any) -> Any:
        raise NotImplementedError("the canonical target only canonicalizes")


@dataclass(frozen=True)
class Canonicalized:
    """CVXPY's output for one target: the parametric program and the chain back.

    Attributes:
        param_prog: CVXPY's ``ParamConeProg`` with formatted cone rows.
        reductions: the chain's reductions, without the pseudo-solver.
        inverse_data: inverse data of each reduction in ``reductions``.
    """

    param_prog: Any
    reductions: tuple[Any, ...]
    inverse_data: tuple[Any, ...]


def canonicalize(
    problem: cp.Problem, gp: bool, quadratic: bool, cones: frozenset[str], solver: str
) -> Canonicalized:
    """Run CVXPY's reductions for our canonical form.

    Args:
        problem: a DPP (or, with ``gp``, DGP) problem, already checked.
        gp: parse as a log-log convex program.
        quadratic: keep a quadratic objective as P instead of lifting it to an SOC.
        cones: cone kinds the target solver accepts.
        solver: the solver's name, for error messages.

    Raises:
        ProblemError: if the problem needs a cone the solver does not support.
    """
    target = _Target(quadratic, cones)
    try:
        data, chain, inverse_data = problem.get_problem_data(
            solver=target, gp=gp, enforce_dpp=True, solver_opts={"use_quad_obj": quadratic}
        )
    except (SolverError, DPPError) as err:
        raise ProblemError(
            f"solver={solver!r} cannot solve this problem: it supports the cones "
            f"{sorted(cones)}{' and a quadratic objective' if quadratic else ''}. "
            f"Use solver='CLARABEL' or 'SCS', which support every cone. (CVXPY said: {err})"
        ) from err
    assert isinstance(chain, Chain)
    return Canonicalized(
        param_prog=data[cps.PARAM_PROB],
        reductions=tuple(chain.reductions[:-1]),
        inverse_data=tuple(inverse_data[:-1]),
    )
