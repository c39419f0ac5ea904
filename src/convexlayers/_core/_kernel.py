"""The numerical work of a layer call on rows of a batch, free of any layer object.

Everything here is a module-level function of a compiled program, a backend, its
settings, an adjoint and plain arrays, so that it runs the same in this process and
in a worker of an executor (:mod:`._executor`): the forward pass (solve, polish,
retry what polishing cannot make exact) and the derivative of some rows (VJP, JVP).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from convexlayers._core._parallel import solve_all
from convexlayers.compile import ParametricConeProgram
from convexlayers.derivative import AbstractAdjoint, FactorStore, Polished, SolutionDerivative
from convexlayers.solvers import get_solver
from convexlayers.solvers._base import AbstractSolver, SolveResult, SolverStatus

# Tolerance ("eps") of the second solve of elements that polishing could not make exact,
# and of the third, by another backend (with its iteration limit).
TIGHT_EPS = 1e-11
RETRY_EPS, RETRY_ITERS = 1e-9, 10_000  # bounded: a retry must not cost more than a solve
# Residual at which a point its solver called inaccurate is nonetheless kept: polished to
# rounding level.
SETTLED = 1e-12
# The other backends, in the order they retry: Clarabel is the most accurate interior
# point, SCS solves some small QPs where Clarabel 0.11 stops at its iteration limit.
_RETRY_ORDER = ("CLARABEL", "SCS")


@dataclass
class Forward:
    """The solved rows: solver results, the returned points (NaN rows where a result has
    none), their relative KKT residuals, and the last polishing factorizations (or None)."""

    results: list[SolveResult]
    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    residual: np.ndarray
    factors: FactorStore | None


@dataclass
class Rows:
    """A derivative of some rows: the values (cotangents of θ for a VJP, tangents of the
    outputs for a JVP) and, per row, how J was solved (method, relative residual,
    refinement steps) and the KKT residual of the point it was taken at."""

    values: np.ndarray
    method: tuple[str, ...]
    residual: np.ndarray
    kkt: np.ndarray
    steps: np.ndarray


def forward(prog: ParametricConeProgram, backend: AbstractSolver, settings: Mapping[str, Any],
            adjoint: AbstractAdjoint, theta: np.ndarray,
            warm: tuple[np.ndarray, ...] | None = None) -> Forward:
    """Solve the rows ``theta`` (B, p); polish and retry as the adjoint asks.

    ``warm``: (x, y, s) starting points of the rows (NaN rows: none), for backends that
    take them; the answer does not depend on them beyond the tolerance.
    """
    data = prog.data.apply(theta)
    results = solve_rows(backend, prog, data, settings, warm)
    x, y, s = stack(results, prog.n, prog.m)
    if not adjoint.polishes_outputs:
        pol = adjoint.improve(prog.data, data, x, y, s, threshold=np.inf)
        return Forward(results, x, y, s, pol.residual, None)
    pol = adjoint.improve(prog.data, data, x, y, s)
    x, y, s, residual = pol.x, pol.y, pol.s, pol.residual
    for retry in _retries(backend, settings, prog):
        stuck = np.flatnonzero(_stuck(results, residual, adjoint.target))
        if not stuck.size:
            break
        again = solve_rows(retry[0], prog, data[stuck], retry[1])
        x2, y2, s2 = stack(again, prog.n, prog.m)
        pol2 = adjoint.improve(prog.data, data[stuck], x2, y2, s2)
        better = np.flatnonzero(pol2.residual < residual[stuck])  # NaN: False
        for i in better:
            b = stuck[i]
            x[b], y[b], s[b], residual[b] = pol2.x[i], pol2.y[i], pol2.s[i], pol2.residual[i]
            results[b] = again[i]
        pol.factors.adopt(stuck[better], pol2.factors, better)
    return Forward(results, x, y, s, residual, pol.factors)


def _stuck(results: list[SolveResult], residual: np.ndarray, target: float) -> np.ndarray:
    """Per element, whether to solve it again: its residual is above ``target``, or its
    solver called it inaccurate and polishing did not reach rounding level (ill-posed
    data: a stalled NATIVE point polished to 6e-10, under the target, was 3.1 off
    relative, and Clarabel solves it exactly)."""
    inexact = np.array([r.status is SolverStatus.OPTIMAL_INACCURATE for r in results],
                       dtype=bool)
    return (residual > target) | (inexact & (residual > SETTLED))


def forward_remote(*args) -> Forward:
    """:func:`forward` in a worker: the factorizations stay there (the backward factors
    afresh, wherever it runs)."""
    result = forward(*args)
    result.factors = None
    return result


def _retries(backend: AbstractSolver, settings: Mapping[str, Any],
             prog: ParametricConeProgram):
    """(backend, settings) to retry inexact elements with: the same backend at a tight
    tolerance, then the other backends of _RETRY_ORDER that can solve the program."""
    yield backend, {**settings, **backend.settings({"eps": TIGHT_EPS})}
    for name in _RETRY_ORDER:
        other = get_solver(name)
        if name != backend.name and fits(prog, other):
            yield other, other.settings({"eps": RETRY_EPS, "max_iters": RETRY_ITERS})


def fits(prog: ParametricConeProgram, backend: AbstractSolver) -> bool:
    """Whether ``backend`` can solve ``prog`` as compiled (its cones, its P)."""
    kinds = prog.data.dims.kinds()
    return kinds <= backend.supported_cones and (
        backend.supports_quadratic_objective or prog.data.P is None)


def solve_rows(backend: AbstractSolver, prog: ParametricConeProgram, data: np.ndarray,
               settings: Mapping[str, Any],
               warm: tuple[np.ndarray, ...] | None = None) -> list[SolveResult]:
    """Solve a batch: as one array program if the backend can, else element by element."""
    if warm is not None and not backend.warm_starts:
        warm = None
    if backend.batched:
        return backend.solve_batch(prog.data, data, settings, warm)
    return solve_all(backend, prog.data, data, settings, warm)


def stack(results, n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, s of a list of solver results, NaN where a result has no point."""
    x = np.full((len(results), n), np.nan)
    y, s = np.full((2, len(results), m), np.nan)
    for b, r in enumerate(results):
        if r.status.has_iterate:
            x[b], y[b], s[b] = r.x, r.y, r.s
    return x, y, s


def derivative(prog: ParametricConeProgram, adjoint: AbstractAdjoint, theta: np.ndarray,
               x, y, s, residual: np.ndarray | None = None,
               cached: FactorStore | None = None):
    """The adjoint's derivative at (x, y, s), polished first where the adjoint does.

    ``residual``: the relative KKT residuals of (x, y, s) if the forward pass has them
    (where all are within the adjoint's target, nothing is polished or measured again);
    ``cached``: factorizations the forward pass left for these rows, if any. Returns the
    derivative (``deriv.x``, ``deriv.y`` are the point it is taken at) and that point's
    relative KKT residual.
    """
    data = prog.data.apply(theta)
    if residual is not None and (residual <= adjoint.target).all():
        pol = Polished(x, y, s, residual, FactorStore(x.shape[0]))
    else:
        pol = adjoint.improve(prog.data, data, x, y, s, threshold=adjoint.target)
    if cached is not None:
        reuse = np.flatnonzero(~pol.factors.known() & cached.known())
        pol.factors.adopt(reuse, cached)
    deriv = adjoint.linearize(prog.data, data, pol.x, pol.y, pol.s, pol.factors)
    return deriv, pol.residual


def _rows(values: np.ndarray, deriv: SolutionDerivative, kkt: np.ndarray) -> Rows:
    k = values.shape[0]
    rep = deriv.report
    if rep is None:  # no system solved (no rows)
        return Rows(values, ("none",) * k, np.full(k, np.nan), kkt, np.zeros(k, np.int64))
    return Rows(values, tuple(rep.method), rep.residual, kkt, np.asarray(rep.refinements))


def vjp_rows(prog: ParametricConeProgram, adjoint: AbstractAdjoint, theta: np.ndarray,
             x, y, s, g: np.ndarray, residual: np.ndarray | None = None,
             cached: FactorStore | None = None) -> Rows:
    """Cotangents ``g`` (k, n_out) of the stacked outputs of solved rows -> of θ (k, p)
    (``residual``, ``cached``: see :func:`derivative`)."""
    deriv, kkt = derivative(prog, adjoint, theta, x, y, s, residual, cached)
    gx, gy = prog.outputs_vjp(prog.outputs_from(deriv.x, deriv.y), g)
    gdata = deriv.vjp(gx, gy, np.zeros_like(gy))
    return _rows(prog.data.vjp(theta, gdata), deriv, kkt)


def jvp_rows(prog: ParametricConeProgram, adjoint: AbstractAdjoint, theta: np.ndarray,
             x, y, s, dtheta: np.ndarray, residual: np.ndarray | None = None,
             cached: FactorStore | None = None) -> Rows:
    """Tangents ``dtheta`` (k, p) of solved rows -> of the stacked outputs (k, n_out)
    (``residual``, ``cached``: see :func:`derivative`)."""
    deriv, kkt = derivative(prog, adjoint, theta, x, y, s, residual, cached)
    dx, dy, _ = deriv.jvp(prog.data.jvp(theta, dtheta))
    out = prog.outputs_from(deriv.x, deriv.y)
    return _rows(prog.outputs_jvp(out, dx, dy), deriv, kkt)
