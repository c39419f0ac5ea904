"""A batched primal-dual interior-point method for LPs, QPs, SOCPs and SDPs.

    minimize ½ xᵀP x + qᵀx   subject to   A_z x = b_z,   A_l x + s = b_l,   s ∈ K

with K a product of nonnegative orthants, second-order and PSD cones (:mod:`._cone_ops`).
Every element of a batch shares the sparsity pattern, so the whole batch is one array
program: each iteration forms and factors the reduced KKT matrices of all unfinished
elements at once (:mod:`._reduced`) and takes Mehrotra's predictor-corrector step in the
Nesterov–Todd scaling (Mehrotra 1992; Vandenberghe's CVXOPT ``coneqp``, whose reduced
system Amos & Kolter's qpth also uses):

    [ P + A_lᵀ (WᵀW)⁻¹ A_l + ρI    A_zᵀ ] [dx  ]   [ r_x ]
    [ A_z                          −ρI  ] [dy_z] = [ r_z ],

regularized by ρ (tiny), with iterative refinement against the unregularized operator.
Finished elements stop; an element whose error stops falling near the end stops at its
best point; elements not solved within ``max_iter`` iterations (among them the
infeasible and unbounded ones, which this method does not certify) are reported by
their error, for the caller to hand to a certifying solver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convexlayers.solvers._cone_ops import Cones, Scaling
from convexlayers.solvers._reduced import BatchQP, Layout, Reduced, layout_for, mv, rmv

_STEP = 0.99
_WARM_FLOOR = 1e-2
_STALL, _STALL_BELOW, _GIVE_UP = 3, 1e-5, 8


@dataclass
class IPMResult:
    """The best point of each element, x (B, n), y_z (B, z), y_l (B, l), s (B, l); per
    element its error (the largest relative residual or gap) and the iterations taken."""

    x: np.ndarray
    yz: np.ndarray
    yl: np.ndarray
    s: np.ndarray
    error: np.ndarray
    iterations: np.ndarray


def _direction(qp: BatchQP, red: Reduced, sc: Scaling, lam, r_x, r_z, r_l, r_s):
    """The Newton direction for residuals r_x, r_z, r_l and the complementarity target
    λ ∘ (W dz + W⁻ᵀ ds) = −r_s (CVXOPT's scaled form)."""
    t = -sc.div(lam, r_s)  # W dz + W⁻ᵀ ds = t
    u = sc.hinv(r_l) + sc.winv(t)
    rhs = np.concatenate([-r_x - rmv(qp.Al, u), -r_z], axis=1)
    sol = red.solve(rhs)
    n = qp.q.shape[1]
    dx, dyz = sol[:, :n], sol[:, n:]
    g = mv(qp.Al, dx)
    return dx, dyz, sc.hinv(g) + u, -r_l - g


def _start(qp: BatchQP, layout: Layout) -> tuple[np.ndarray, ...]:
    """CVXOPT's starting point: the least-squares solution with W = I, moved inside."""
    red = Reduced(qp, None, layout)
    sol = red.solve(np.concatenate([-qp.q + rmv(qp.Al, qp.bl), qp.bz], axis=1))
    n = qp.q.shape[1]
    x, yz = sol[:, :n], sol[:, n:]
    s = qp.bl - mv(qp.Al, x)
    yl = -s.copy()
    e = qp.cone.identity()
    for v in (s, yl):
        v += (np.maximum(0.0, -qp.cone.min_eig(v)) + 1.0)[:, None] * e
    return x, yz, yl, s


def _error(qp: BatchQP, x, yz, yl, s) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Per element, the largest of the relative dual residual, primal residual and gap
    (the element is solved to ``tol`` when this is at most ``tol``); and the residuals
    (r_x, r_z, r_l), which the step from this point reuses."""
    r_x = qp.q + rmv(qp.Az, yz) + rmv(qp.Al, yl)
    pobj = (qp.q * x).sum(axis=1)
    if qp.P is not None:
        Px = mv(qp.P, x)
        r_x += Px
        pobj += 0.5 * (x * Px).sum(axis=1)
    r_z, r_l = mv(qp.Az, x) - qp.bz, mv(qp.Al, x) + s - qp.bl
    norm = np.linalg.norm
    dual = norm(r_x, axis=1) / (1.0 + norm(qp.q, axis=1))
    primal = np.sqrt(norm(r_z, axis=1) ** 2 + norm(r_l, axis=1) ** 2) / (
        1.0 + norm(qp.bz, axis=1) + norm(qp.bl, axis=1))
    gap = (s * yl).sum(axis=1) / (1.0 + np.abs(pobj))
    error = np.maximum(np.maximum(dual, primal), gap)
    return np.where(np.isfinite(error), error, np.inf), (r_x, r_z, r_l)


def _iterate(qp: BatchQP, layout: Layout, residuals, x, yz, yl, s):
    """One predictor-corrector step for every element of ``qp`` (in place), from the
    point's ``residuals`` (r_x, r_z, r_l)."""
    cone = qp.cone
    r_x, r_z, r_l = residuals
    mu = (s * yl).sum(axis=1) / max(cone.degree, 1)
    sc = cone.scaling(s, yl)
    lam = sc.lam(yl)
    red = Reduced(qp, sc, layout)
    aff = _direction(qp, red, sc, lam, r_x, r_z, r_l, cone.prod(lam, lam))
    alpha = np.minimum(sc.max_step(s, aff[3], True), sc.max_step(yl, aff[2], False))[:, None]
    mu_aff = ((s + alpha * aff[3]) * (yl + alpha * aff[2])).sum(axis=1) / max(cone.degree, 1)
    sigma = (mu_aff / np.maximum(mu, np.finfo(float).tiny)) ** 3
    # Mehrotra's corrector: (W⁻ᵀ ds_aff) ∘ (W dz_aff), and the centering σμe.
    r_s = (cone.prod(lam, lam) + cone.prod(sc.winv_t(aff[3]), sc.w(aff[2]))
           - (sigma * mu)[:, None] * cone.identity())
    dx, dyz, dyl, ds = _direction(qp, red, sc, lam, r_x, r_z, r_l, r_s)
    a = (_STEP * np.minimum(sc.max_step(s, ds, True), sc.max_step(yl, dyl, False)))[:, None]
    x += a * dx
    yz += a * dyz
    yl += a * dyl
    s += a * ds


def solve_qp_batch(qp: BatchQP, tol: float = 1e-9, max_iter: int = 50,
                   warm: tuple[np.ndarray, ...] | None = None) -> IPMResult:
    """Solve every QP of the batch; finished elements stop iterating.

    Args:
        qp: the batch.
        tol: relative tolerance on the primal and dual residuals and the gap.
        max_iter: iterations before an element is given up (reported not converged).
        warm: starting points (x, y_z, y_l, s), rows with NaN left to the cold start.
    """
    # Infeasible and unbounded elements diverge, overflowing on the way; they are
    # caught as not converged (or broken) and reported, so the warnings are noise.
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return _solve(qp, tol, max_iter, warm)


def warm_rows(warm: tuple[np.ndarray, ...]) -> np.ndarray:
    """(B,) whether each element has a finite warm point (NaN rows start cold)."""
    return np.all([np.isfinite(w).all(axis=1) for w in warm], axis=0)


def _warm(cold: tuple[np.ndarray, ...], warm: tuple[np.ndarray, ...], cone: Cones) -> None:
    """Replace the rows of ``cold`` (in place) that have a finite warm point by it, with
    the eigenvalues of s and y_l raised to at least ``_WARM_FLOOR`` times their scale:
    an interior point near the previous solution, away enough from the boundary to take
    long steps."""
    rows = np.flatnonzero(warm_rows(warm))
    if not rows.size:
        return
    x, yz, yl, s = (np.array(w[rows], dtype=np.float64) for w in warm)
    for v in (yl, s):
        cone.raise_to(v, _WARM_FLOOR * (1.0 + np.abs(v).max(axis=1, initial=0.0)))
    for c, w in zip(cold, (x, yz, yl, s), strict=True):
        c[rows] = w


def _solve(qp: BatchQP, tol: float, max_iter: int, warm) -> IPMResult:
    B = qp.q.shape[0]
    layout = layout_for(qp)
    point = _start(qp, layout)
    if warm is not None:
        _warm(point, warm, qp.cone)
    best = tuple(v.copy() for v in point)
    best_error = np.full(B, np.inf)
    stalled = np.zeros(B, dtype=np.int64)
    iterations = np.zeros(B, dtype=np.int64)
    active = np.arange(B)
    for it in range(max_iter + 1):
        sub = qp.take(active)
        cur = tuple(v[active] for v in point)
        error, residuals = _error(sub, *cur)
        better = error < best_error[active]
        for v, c in zip(best, cur, strict=True):
            v[active[better]] = c[better]
        # Near the end, the error halves at least every _STALL iterations, or the element
        # stops (ill-conditioning near a degenerate solution, or a second-order cone's
        # scaling near its boundary, makes it climb again); a jump stops it at once.
        # Far from a solution, _GIVE_UP iterations without halving the error mean an
        # infeasible or unbounded element (this method certifies neither): it stops and
        # goes to the certifying solver.
        near = best_error[active] <= _STALL_BELOW
        progress = error < 0.5 * best_error[active]
        stalled[active] = np.where(progress, 0, stalled[active] + 1)
        stalled[active] += _STALL * (near & (error > 100.0 * best_error[active]))
        best_error[active] = np.minimum(best_error[active], error)
        keep = ((error > tol) & (stalled[active] < np.where(near, _STALL, _GIVE_UP))
                & np.isfinite(error))
        if not keep.any() or it == max_iter:
            break
        active, sub = active[keep], sub.take(np.flatnonzero(keep))
        cur = tuple(c[keep] for c in cur)
        _iterate(sub, layout, tuple(r[keep] for r in residuals), *cur)
        for v, c in zip(point, cur, strict=True):
            v[active] = c
        iterations[active] += 1
    x, yz, yl, s = best
    return IPMResult(x, yz, yl, s, best_error, iterations)
