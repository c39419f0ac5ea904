"""A batched primal-dual interior-point method for QPs and LPs (zero and nonnegative cones).

    minimize ½ xᵀP x + qᵀx   subject to   A_z x = b_z,   A_l x + s = b_l,   s ≥ 0

Every element of a batch shares the sparsity pattern, so the whole batch is one array
program: each iteration forms the reduced KKT matrices of all active elements, factors
them in one batched LU call, and takes Mehrotra's predictor-corrector step (Mehrotra
1992; the reduced system of Vandenberghe's CVXOPT ``coneqp`` and of Amos & Kolter's
qpth). With W = diag(y/s) on the inequality rows,

    [ P + A_lᵀ W A_l + ρI    A_zᵀ ] [dx  ]   [ r_x ]
    [ A_z                   −ρI   ] [dy_z] = [ r_z ],

regularized by ρ (tiny) and polished by one step of iterative refinement. Finished
elements stop; elements that have not converged after ``max_iter`` iterations (among
them the infeasible and unbounded ones, which this method does not certify) are
reported as such, for the caller to hand to a certifying solver.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from convexlayers.solvers._elimination import Factorization, Plan, analyse

_REG = 1e-10
_REFINE = 2
_STEP = 0.99
_WARM_FLOOR = 1e-2
_STALL, _STALL_BELOW = 3, 1e-5


@dataclass
class BatchQP:
    """Dense data of a batch of QPs: P (B, n, n) symmetric or None, q (B, n),
    A_z (B, z, n), b_z (B, z), A_l (B, l, n), b_l (B, l)."""

    P: np.ndarray | None
    q: np.ndarray
    Az: np.ndarray
    bz: np.ndarray
    Al: np.ndarray
    bl: np.ndarray

    def take(self, idx: np.ndarray) -> BatchQP:
        if idx.size == self.q.shape[0] and (idx == np.arange(idx.size)).all():
            return self  # the whole batch: no copy
        return BatchQP(None if self.P is None else self.P[idx], self.q[idx], self.Az[idx],
                       self.bz[idx], self.Al[idx], self.bl[idx])


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


def _mv(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (M @ v[..., None])[..., 0]


def _rmv(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (v[:, None, :] @ M)[:, 0]


def plan_for(qp: BatchQP) -> Plan:
    """The elimination plan of the batch's reduced KKT pattern (see :mod:`._elimination`)."""
    return analyse(*kkt_pattern(qp))


@dataclass(frozen=True)
class _Pairs:
    """A_lᵀ W A_l from products of nonzeros in the same row: nonzeros (``rows``,
    ``cols``), pairs (``left``, ``right``) of them, and ``gather`` (n², pairs), which
    sums the pairs' products into H."""

    rows: np.ndarray
    cols: np.ndarray
    left: np.ndarray
    right: np.ndarray
    gather: sp.csr_array


@dataclass(frozen=True)
class Layout:
    """What every iteration of a batch shares: the elimination plan and, when A_l is
    sparse enough, the pairs that form A_lᵀ W A_l."""

    plan: Plan
    pairs: _Pairs | None = None

    def hessian(self, qp: BatchQP, w: np.ndarray) -> np.ndarray:
        """A_lᵀ diag(w) A_l for the batch (B, n, n)."""
        pr = self.pairs
        if pr is None:
            return np.swapaxes(qp.Al, 1, 2) @ (w[:, :, None] * qp.Al)
        a = qp.Al[:, pr.rows, pr.cols]
        vals = w[:, pr.rows[pr.left]] * a[:, pr.left] * a[:, pr.right]
        n = qp.q.shape[1]
        return (pr.gather @ vals.T).T.reshape(-1, n, n)


def layout_for(qp: BatchQP) -> Layout:
    """The batch's :class:`Layout`: pairs of nonzeros where they cost a twentieth of the
    dense product's flops (sparse rows: bounds, ``abs`` and MPC constraints), since a
    sparse gather is about that much slower per flop than BLAS."""
    plan = plan_for(qp)
    Alp = (qp.Al != 0).any(axis=0)
    rows, cols = np.nonzero(Alp)
    counts = np.bincount(rows, minlength=Alp.shape[0])[rows]  # per nonzero: its row's
    if 20 * counts.sum() >= Alp.size * Alp.shape[1]:
        return Layout(plan)
    left = np.repeat(np.arange(rows.size), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    start = np.searchsorted(rows, rows)  # the row's first nonzero
    right = start[left] + np.arange(left.size) - first
    n = Alp.shape[1]
    gather = sp.csr_array((np.ones(left.size), (cols[left] * n + cols[right],
                                                 np.arange(left.size))),
                          shape=(n * n, left.size))
    return Layout(plan, _Pairs(rows, cols, left, right, gather))


def kkt_pattern(qp: BatchQP) -> tuple[np.ndarray, np.ndarray]:
    """The reduced KKT matrix's pattern (N, N) over the batch, and its safe pivots (N,):
    primal unknowns with a diagonal entry of P or an inequality row."""
    n, z = qp.q.shape[1], qp.Az.shape[1]
    Pp = np.zeros((n, n), dtype=bool) if qp.P is None else (qp.P != 0).any(axis=0)
    Alp = (qp.Al != 0).any(axis=0)
    Azp = (qp.Az != 0).any(axis=0)
    pattern = np.zeros((n + z, n + z), dtype=bool)
    pattern[:n, :n] = Pp | ((Alp.T.astype(np.int32) @ Alp.astype(np.int32)) > 0)
    pattern[n:, :n] = Azp
    pattern[:n, n:] = Azp.T
    safe = np.concatenate([np.diagonal(Pp) | Alp.any(axis=0), np.zeros(z, dtype=bool)])
    return pattern, safe


class _Reduced:
    """The factored reduced KKT matrix of one iteration, for a batch."""

    def __init__(self, qp: BatchQP, w: np.ndarray, layout: Layout) -> None:
        n, z = qp.q.shape[1], qp.Az.shape[1]
        H = layout.hessian(qp, w)
        if qp.P is not None:
            H += qp.P
        K = np.zeros((qp.q.shape[0], n + z, n + z))
        K[:, :n, :n] = H
        K[:, :n, n:] = np.swapaxes(qp.Az, 1, 2)
        K[:, n:, :n] = qp.Az
        # ρ relative to the data, not to W (whose entries reach 1e10 near the end).
        scale = 1.0 + np.abs(qp.Az).max(axis=(1, 2), initial=0.0) + np.abs(qp.Al).max(
            axis=(1, 2), initial=0.0)
        signs = np.concatenate([np.ones(n), -np.ones(z)])
        self.K = K
        idx = np.arange(n + z)
        Kr = K.copy()
        Kr[:, idx, idx] += _REG * scale[:, None] * signs
        self.factors = Factorization(layout.plan, Kr, signs, _REG * scale)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """K⁻¹ rhs, with iterative refinement against the unregularized K."""
        z = self.factors.solve(rhs)
        for _ in range(_REFINE):
            z += self.factors.solve(rhs - _mv(self.K, z))
        return z


def _direction(qp: BatchQP, red: _Reduced, s, yl, r_x, r_z, r_l, r_c):
    """The Newton direction for residuals r_x, r_z, r_l and complementarity target r_c."""
    # ds = −r_l − A_l dx;  dy_l = (r_c' + Y A_l dx)/S with r_c' = −r_c + Y r_l.
    t = (-r_c + yl * r_l) / s
    rhs = np.concatenate([-r_x - _rmv(qp.Al, t), -r_z], axis=1)
    sol = red.solve(rhs)
    n = qp.q.shape[1]
    dx, dyz = sol[:, :n], sol[:, n:]
    dyl = t + (yl / s) * _mv(qp.Al, dx)
    ds = -r_l - _mv(qp.Al, dx)
    return dx, dyz, dyl, ds


def _max_step(v: np.ndarray, dv: np.ndarray) -> np.ndarray:
    ratio = np.where(dv < 0, -v / np.where(dv < 0, dv, -1.0), np.inf)
    return np.minimum(1.0, ratio.min(axis=1, initial=np.inf))


def _start(qp: BatchQP, layout: Layout) -> tuple[np.ndarray, ...]:
    """CVXOPT's starting point: the least-squares solution with W = I, shifted inside."""
    red = _Reduced(qp, np.ones_like(qp.bl), layout)
    sol = red.solve(np.concatenate([-qp.q + _rmv(qp.Al, qp.bl), qp.bz], axis=1))
    n = qp.q.shape[1]
    x, yz = sol[:, :n], sol[:, n:]
    s = qp.bl - _mv(qp.Al, x)
    yl = -s.copy()
    for v in (s, yl):
        shift = np.maximum(0.0, -v.min(axis=1, initial=np.inf)) + 1.0
        v += shift[:, None]
    return x, yz, yl, s


def _residuals(qp: BatchQP, x, yz, yl, s):
    r_x = qp.q + _rmv(qp.Az, yz) + _rmv(qp.Al, yl)
    if qp.P is not None:
        r_x += _mv(qp.P, x)
    return r_x, _mv(qp.Az, x) - qp.bz, _mv(qp.Al, x) + s - qp.bl


def _error(qp: BatchQP, x, yz, yl, s) -> np.ndarray:
    """Per element, the largest of the relative dual residual, primal residual and gap
    (the element is solved to ``tol`` when this is at most ``tol``)."""
    r_x, r_z, r_l = _residuals(qp, x, yz, yl, s)
    norm = np.linalg.norm
    pobj = (qp.q * x).sum(axis=1)
    if qp.P is not None:
        pobj += 0.5 * (x * _mv(qp.P, x)).sum(axis=1)
    dual = norm(r_x, axis=1) / (1.0 + norm(qp.q, axis=1))
    primal = np.sqrt(norm(r_z, axis=1) ** 2 + norm(r_l, axis=1) ** 2) / (
        1.0 + norm(qp.bz, axis=1) + norm(qp.bl, axis=1))
    gap = (s * yl).sum(axis=1) / (1.0 + np.abs(pobj))
    error = np.maximum(np.maximum(dual, primal), gap)
    return np.where(np.isfinite(error), error, np.inf)


def _iterate(qp: BatchQP, layout: Layout, x, yz, yl, s):
    """One predictor-corrector step for every element of ``qp`` (in place)."""
    rows = max(qp.bl.shape[1], 1)
    r_x, r_z, r_l = _residuals(qp, x, yz, yl, s)
    mu = (s * yl).sum(axis=1) / rows
    red = _Reduced(qp, yl / s, layout)
    aff = _direction(qp, red, s, yl, r_x, r_z, r_l, s * yl)
    alpha = np.minimum(_max_step(s, aff[3]), _max_step(yl, aff[2]))
    mu_aff = ((s + alpha[:, None] * aff[3]) * (yl + alpha[:, None] * aff[2])).sum(axis=1) / rows
    sigma = (mu_aff / np.maximum(mu, np.finfo(float).tiny)) ** 3
    r_c = s * yl + aff[3] * aff[2] - (sigma * mu)[:, None]
    dx, dyz, dyl, ds = _direction(qp, red, s, yl, r_x, r_z, r_l, r_c)
    alpha = _STEP * np.minimum(_max_step(s, ds), _max_step(yl, dyl))
    a = alpha[:, None]
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


def _warm(cold: tuple[np.ndarray, ...], warm: tuple[np.ndarray, ...]) -> None:
    """Replace the rows of ``cold`` (in place) that have a finite warm point by it, with
    s and y_l raised to at least ``_WARM_FLOOR`` times their scale: an interior point
    near the previous solution, away enough from the boundary to take long steps."""
    rows = np.flatnonzero(np.all([np.isfinite(w).all(axis=1) for w in warm], axis=0))
    if not rows.size:
        return
    x, yz, yl, s = (np.array(w[rows], dtype=np.float64) for w in warm)
    for v in (yl, s):
        floor = _WARM_FLOOR * (1.0 + np.abs(v).max(axis=1, initial=0.0))
        np.maximum(v, floor[:, None], out=v)
    for c, w in zip(cold, (x, yz, yl, s), strict=True):
        c[rows] = w


def _solve(qp: BatchQP, tol: float, max_iter: int, warm) -> IPMResult:
    B = qp.q.shape[0]
    layout = layout_for(qp)
    point = _start(qp, layout)
    if warm is not None:
        _warm(point, warm)
    best = tuple(v.copy() for v in point)
    best_error = np.full(B, np.inf)
    stalled = np.zeros(B, dtype=np.int64)
    iterations = np.zeros(B, dtype=np.int64)
    active = np.arange(B)
    for it in range(max_iter + 1):
        sub = qp.take(active)
        cur = tuple(v[active] for v in point)
        error = _error(sub, *cur)
        better = error < best_error[active]
        for v, c in zip(best, cur, strict=True):
            v[active[better]] = c[better]
        # Near the end, the error halves at least every _STALL iterations, or the element
        # stops (ill-conditioning near a degenerate solution makes it climb again).
        progress = (error < 0.5 * best_error[active]) | (best_error[active] > _STALL_BELOW)
        stalled[active] = np.where(progress, 0, stalled[active] + 1)
        best_error[active] = np.minimum(best_error[active], error)
        keep = (error > tol) & (stalled[active] < _STALL) & np.isfinite(error)
        if not keep.any() or it == max_iter:
            break
        active, sub = active[keep], sub.take(np.flatnonzero(keep))
        cur = tuple(c[keep] for c in cur)
        _iterate(sub, layout, *cur)
        for v, c in zip(point, cur, strict=True):
            v[active] = c
        iterations[active] += 1
    x, yz, yl, s = best
    return IPMResult(x, yz, yl, s, best_error, iterations)
