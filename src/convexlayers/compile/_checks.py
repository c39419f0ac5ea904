"""Construction-time checks: is the problem usable, are parameters and outputs right?

Every check raises :class:`ProblemError` before any canonicalization work,
naming the argument, what was received and what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cvxpy as cp

from convexlayers._errors import ProblemError


def _culprit(node: Any, ok: Callable[[Any], bool]) -> Any:
    """Descend to the smallest subexpression of ``node`` that fails ``ok``."""
    for arg in getattr(node, "args", ()):
        if not ok(arg):
            return _culprit(arg, ok)
    return node


def _first_failure(problem: cp.Problem, ok: Callable[[Any], bool]) -> str:
    for node in [problem.objective, *problem.constraints]:
        if not ok(node):
            bad = _culprit(node, ok)
            return f"`{bad}` in `{node}`" if bad is not node else f"`{node}`"
    return "(CVXPY could not point at one expression)"


def check_problem(problem: cp.Problem, gp: bool, quadratic: bool) -> None:
    """Check that ``problem`` is DPP (or DGP-DPP with ``gp``) and otherwise supported.

    Args:
        problem: the user's problem.
        gp: the layer was asked to parse a log-log convex program.
        quadratic: the solver takes a quadratic objective, which lets CVXPY accept
            ``quad_form(x, P)`` with a parametric P in the objective.
    """
    if not isinstance(problem, cp.Problem):
        raise ProblemError(
            f"problem: expected a cvxpy.Problem, received {type(problem).__name__}."
        )
    if any(v.attributes["boolean"] or v.attributes["integer"] for v in problem.variables()):
        raise ProblemError(
            "problem: has boolean or integer variables; a mixed-integer solution map is "
            "not differentiable. Relax the integrality to make a layer."
        )
    leaves = [*problem.variables(), *problem.parameters(), *problem.constants()]
    if any(leaf.is_complex() for leaf in leaves):
        raise ProblemError(
            "problem: has complex variables, parameters or constants, which convexlayers "
            "does not support. Split them into real and imaginary parts."
        )
    if gp:
        _check_dgp(problem)
    else:
        _check_dcp(problem, quadratic)


def _check_dgp(problem: cp.Problem) -> None:
    if not problem.is_dgp():
        where = _first_failure(problem, lambda e: e.is_dgp())
        raise ProblemError(
            f"problem: is not log-log convex (DGP), as gp=True requires: {where} breaks "
            "the DGP rules. Use pos=True variables and parameters, or drop gp=True if the "
            "problem is DCP."
        )
    # CVXPY's @compute_once is typed as taking self only, hiding is_dgp/is_dpp's arguments.
    if not problem.is_dgp(dpp=True):  # type: ignore[call-arg]
        where = _first_failure(problem, lambda e: e.is_dgp(dpp=True))
        raise ProblemError(
            f"problem: is DGP but not DPP: {where} uses parameters in a way the DPP "
            "rules forbid. Introduce auxiliary parameters so each one enters log-log affinely."
        )


def _check_dcp(problem: cp.Problem, quadratic: bool) -> None:
    if not problem.is_dcp():
        where = _first_failure(problem, lambda e: e.is_dcp())
        hint = " It is log-log convex: pass gp=True." if problem.is_dgp() else ""
        fix = " Rewrite it by the rules of https://www.cvxpy.org/tutorial/dcp/index.html."
        raise ProblemError(
            f"problem: is not convex (DCP): {where} breaks the DCP rules.{hint or fix}"
        )
    if problem.is_dpp():
        return
    if problem.is_dpp(quad_form_dpp="qp"):  # type: ignore[call-arg]  # see _check_dgp
        if quadratic:
            return
        raise ProblemError(
            "problem: the objective uses quad_form(x, P) with a parametric P, which needs a "
            "solver that takes a quadratic objective. Use solver='CLARABEL' or 'SCS'."
        )
    where = _first_failure(problem, lambda e: e.is_dcp(dpp=True))
    raise ProblemError(
        f"problem: is DCP but not DPP: {where} is not DPP (for example a product of two "
        "parameters, or a parameter inside a nonlinear atom). Introduce an auxiliary "
        "parameter for the offending subexpression; see "
        "https://www.cvxpy.org/tutorial/dpp/index.html."
    )


def check_parameters(problem: cp.Problem, parameters: Sequence[Any]) -> tuple[cp.Parameter, ...]:
    """Check that ``parameters`` lists exactly the problem's parameters, once each."""
    if isinstance(parameters, cp.Parameter) or not isinstance(parameters, Sequence):
        raise ProblemError(
            "parameters: expected a list of cvxpy.Parameter, received "
            f"{type(parameters).__name__}. Wrap a single parameter in a list."
        )
    for p in parameters:
        if not isinstance(p, cp.Parameter):
            raise ProblemError(
                f"parameters: {p!r} is a {type(p).__name__}, not a cvxpy.Parameter."
            )
    ids = [p.id for p in parameters]
    dup = sorted({p.name() for p in parameters if ids.count(p.id) > 1})
    if dup:
        raise ProblemError(f"parameters: {dup} appear more than once; list each parameter once.")
    wanted = {p.id: p for p in problem.parameters()}
    extra = [p.name() for p in parameters if p.id not in wanted]
    if extra:
        raise ProblemError(
            f"parameters: {extra} do not appear in the problem. The problem's parameters "
            f"are {[p.name() for p in wanted.values()]}."
        )
    missing = [p.name() for pid, p in wanted.items() if pid not in ids]
    if missing:
        raise ProblemError(
            f"parameters: the problem's parameters {missing} are missing. Pass every "
            "parameter of the problem (it is the list of tensors the layer takes)."
        )
    return tuple(parameters)


@dataclass(frozen=True)
class OutputRef:
    """What the user asked for: a variable, or a dual variable of a constraint.

    Attributes:
        leaf: the cvxpy Variable (a problem variable or ``con.dual_variables[k]``).
        constraint: the constraint whose dual it is, or None for a primal variable.
        index: k in ``constraint.dual_variables[k]``.
    """

    leaf: cp.Variable
    constraint: Any = None
    index: int = 0

    @property
    def is_dual(self) -> bool:
        return self.constraint is not None


def resolve_outputs(problem: cp.Problem, variables: Sequence[Any] | None) -> tuple[OutputRef, ...]:
    """Map each requested variable to a primal variable or a constraint's dual variable."""
    if variables is None:
        return tuple(OutputRef(v) for v in problem.variables())
    if isinstance(variables, cp.Variable) or not isinstance(variables, Sequence):
        raise ProblemError(
            "variables: expected a list of cvxpy.Variable, received "
            f"{type(variables).__name__}. Wrap a single variable in a list."
        )
    if not variables:
        raise ProblemError(
            "variables: received an empty list, so the layer would have no outputs. List "
            "the outputs you want (problem variables or constraint duals such as "
            "`constraint.dual_variables[0]`), or pass variables=None for every variable."
        )
    primal = {v.id for v in problem.variables()}
    duals = {
        dv.id: (con, k)
        for con in problem.constraints
        for k, dv in enumerate(con.dual_variables)
    }
    refs = []
    for v in variables:
        if not isinstance(v, cp.Variable):
            raise ProblemError(
                f"variables: {v!r} is a {type(v).__name__}, not a cvxpy.Variable. Pass "
                "problem variables or constraint duals such as `constraint.dual_variables[0]`."
            )
        if v.id in primal:
            refs.append(OutputRef(v))
        elif v.id in duals:
            refs.append(OutputRef(v, *duals[v.id]))
        else:
            raise ProblemError(
                f"variables: {v.name()} is neither a variable of the problem nor the dual "
                "variable of one of its constraints. The problem's variables are "
                f"{[u.name() for u in problem.variables()]}."
            )
    return tuple(refs)
