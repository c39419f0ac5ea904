"""Newton refinement of a solver's solution on the normal map.

An interior-point or splitting solver stops at a tolerance (often 1e-8 on the
exponential and power cones, 1e-4 for SCS by default). At a nondegenerate
solution the normal map N(x, v) is smooth, and Newton's method on it — with
the same J as the derivative — converges quadratically from there:

    (x, v) ← (x, v) − J⁻¹ N(x, v),   then y = Π_{K*}(v), s = y − v.

Steps are damped by backtracking on ||N|| (a semismooth Newton method: near a
weakly active constraint the solver's point may sit on the wrong side, where the
full step overshoots); where no step helps (a degenerate solution, J singular)
the solver's point is kept.
"""

from __future__ import annotations

import functools

import numpy as np

from convexlayers.cones import ConeDims, project_dual, svec_size
from convexlayers.derivative._engine import SolutionDerivative
from convexlayers.derivative._linear import AbstractLinearSolver, FactorStore
from convexlayers.derivative._structure import Structure, a_matvec, a_rmatvec, p_matvec


def normal_residual(st: Structure, data: np.ndarray, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """N(x, v) for a batch: (B, n + m)."""
    p_vals, q, a_vals, b = st.split(data)
    y = project_dual(st.dims, v)
    r1 = p_matvec(st, p_vals, x) + a_rmatvec(st, a_vals, y) + q
    r2 = a_matvec(st, a_vals, x) + y - v - b
    return np.concatenate([r1, r2], axis=1)


def rows(idx: np.ndarray, *arrays: np.ndarray) -> list[np.ndarray]:
    """The rows ``idx`` of each array; the arrays themselves (no copy of a batch's data,
    megabytes) when ``idx`` is every row in order."""
    if idx.size == arrays[0].shape[0] and (idx == np.arange(idx.size)).all():
        return list(arrays)
    return [a[idx] for a in arrays]


# Bound of the weights of the normal map's entries: a row or column whose data are all
# below 1/_MAX_WEIGHT in magnitude is weighted as if they were that large.
_MAX_WEIGHT = 1e6


@functools.lru_cache(maxsize=64)
def _cone_blocks(dims: ConeDims) -> tuple[np.ndarray, np.ndarray] | None:
    """(first row, rows) of each block of rows that must share one weight: each row of
    the zero cone and the orthant alone, each other cone whole (its scaling must be
    uniform); None when every block is one row."""
    if dims.soc_start == dims.size:
        return None
    heads: list[int] = list(range(dims.soc_start))
    for sizes, start in ((list(dims.soc), dims.soc_start),
                         ([svec_size(k) for k in dims.psd], dims.psd_start),
                         ([3] * (dims.exp + len(dims.power)), dims.exp_start)):
        heads += [start + int(o) for o in np.cumsum([0, *sizes[:-1]])] if sizes else []
    first = np.asarray(heads, dtype=np.int64)
    return first, np.diff(np.r_[first, dims.size])


def _inverse(size: np.ndarray) -> np.ndarray:
    """1 / size clipped to [1, _MAX_WEIGHT]; 1 where size is 0 (nothing to scale)."""
    return np.where(size > 0, 1.0 / np.clip(size, 1.0 / _MAX_WEIGHT, 1.0), 1.0)


def weights(st: Structure, data: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per element, weights W of N's entries (B, n + m), the scale residuals are taken
    relative to (B,), and the objective's factor σ (B,): a residual is that of the
    problem equilibrated to order one.

    Rows of A x + s = b get D = 1 / max(||A_i·||, |b_i|) (the largest over each cone,
    whose scaling must be uniform); columns E = 1 / ||[DA; P]_·j||; the objective
    σ = 1 / max(|E q|, ||E P E||), and P x + Aᵀy + q gets σE (norms: Euclidean, per row
    or column; the last one the largest row's). Each factor is clipped to
    [1, _MAX_WEIGHT]: data of order one or more are measured as they are, while tiny data
    (a row, a column or the objective at 1e-4) count as much as data of order one, whose
    residual would otherwise hide errors of the solution 1/scale times larger. The scale
    is 1 + ||W q|| + ||W b||.
    """
    p_vals, q, a_vals, b = st.split(data)
    a2 = np.square(a_vals)
    row = np.maximum(np.sqrt((st.A.row_scatter @ a2.T).T), np.abs(b))
    blocks = _cone_blocks(st.dims)
    if blocks is not None:
        row = np.repeat(np.maximum.reduceat(row, blocks[0], axis=1), blocks[1], axis=1)
    D = _inverse(row)
    col2 = a_rmatvec(st, a2, np.square(D))
    if st.P is not None:
        p2 = np.square(p_vals)
        col2 += p_matvec(st, p2, np.ones_like(q))
    E = _inverse(np.sqrt(col2))
    cost = np.abs(q * E).max(axis=1, initial=0.0)
    if st.P is not None:
        epe = E * np.sqrt(p_matvec(st, p2, np.square(E)))
        cost = np.maximum(cost, epe.max(axis=1, initial=0.0))
    sigma = _inverse(cost)
    w = np.concatenate([np.minimum(sigma[:, None] * E, _MAX_WEIGHT), D], axis=1)
    scale = 1.0 + np.linalg.norm(w[:, : st.n] * q, axis=1) + np.linalg.norm(
        w[:, st.n :] * b, axis=1)
    return w, scale, sigma


def relative(N: np.ndarray, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """||W N|| / (1 + ||W q|| + ||W b||) per element, N (B, n + m) a normal-map residual
    and (W, scale) from :func:`weights`."""
    return np.linalg.norm(w * N, axis=1) / scale


def kkt_residual(st: Structure, data: np.ndarray, x: np.ndarray, y: np.ndarray,
                 s: np.ndarray) -> np.ndarray:
    """Relative normal-map residual ||W N(x, y − s)|| / (1 + ||W q|| + ||W b||) per element
    (W: :func:`weights`)."""
    w, scale, _ = weights(st, data)
    return relative(normal_residual(st, data, x, y - s), w, scale)


# Rounding error of N relative to the data, times the largest weight: the floor of a
# weighted residual (measured: 1e-12 on data at 1e-3).
_FLOOR = 1e-15
# An element whose weighted residual is below this (relative) and whose last step did
# not halve its residual is at rounding level: it stops (further steps would each cost a
# factorization and gain nothing).
_ROUNDING = 1e-11


def refine(
    st: Structure,
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    linear_solver: AbstractLinearSolver | None = None,
    steps: int = 10,
    tol: float = 1e-13,
    start: np.ndarray | None = None,
    weighted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, FactorStore, np.ndarray]:
    """Improve (x, y, s) by semismooth Newton steps on N with a backtracking line search.

    A full step can increase ||N|| when the solver's point sits on the wrong side of a
    nearly active constraint (D then describes the wrong face); halving the step until
    ||N|| decreases keeps every element's residual monotone. The line search is on the
    plain ||N||, as before residuals were weighted; the weights (:func:`weights`) decide
    when to stop, and the face orthant rows start on (:func:`_snap`). Elements stop
    once their weighted residual
    (:func:`relative`) is below ``tol`` (or the rounding floor the weights raise it to,
    at most _ROUNDING), no step helps, or they reach rounding level.

    ``start``: N(x, y − s) (B, n + m), ``weighted``: :func:`weights`, if the caller has
    them.

    Returns:
        The polished (x, y, s), per element the factorization of its last Newton step
        (a J very close to the one at the returned point), for the derivative to reuse,
        and the relative (weighted) residuals of the returned points.
    """
    store = FactorStore(x.shape[0])
    w, scale, sigma = weights(st, data) if weighted is None else weighted
    v, snapped = _snap(st, w, sigma, y, s)
    # N(x, v) of the current points (kept up to date by the line search)
    N = normal_residual(st, data, x, v) if start is None or snapped else start.copy()
    res = np.linalg.norm(N, axis=1)
    wres = np.linalg.norm(w * N, axis=1)
    # Rounding in N is magnified by the weights: the target is tol or that floor.
    goal = np.clip(_FLOOR * w.max(axis=1, initial=1.0), tol, _ROUNDING) * scale
    active = wres > goal
    for _ in range(steps):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        yk = project_dual(st.dims, v[idx])
        (data_k,) = rows(idx, data)
        # A later step solves with the previous step's factors, refined against its own
        # J, and factors afresh only where that fails: from 1e-6 a step lands near
        # 1e-12, and the next barely changes J (one factorization where a portfolio
        # SOCP, robust and logistic regression and a 1,000-ball took two).
        deriv = SolutionDerivative(st, data_k, x[idx], yk, yk - v[idx], linear_solver,
                                   factors=store.take(idx))
        z = deriv.solve(-N[idx])
        store.adopt(idx, deriv.store, np.arange(idx.size))
        before = res[idx]
        improved = _line_search(st, data, idx, z, x, v, N, res)
        wres[idx] = np.linalg.norm(w[idx] * N[idx], axis=1)
        flat = (res[idx] > 0.5 * before) & (wres[idx] <= _ROUNDING * scale[idx])
        active[idx[~improved | flat]] = False
        active &= wres > goal
    y = project_dual(st.dims, v)
    return x, y, y - v, store, wres / scale


def _snap(st: Structure, w: np.ndarray, sigma: np.ndarray, y: np.ndarray,
          s: np.ndarray) -> tuple[np.ndarray, bool]:
    """v = y − s of the points to polish, except on orthant rows whose face changes when
    the multiplier and slack are compared at the equilibrated scale (σ y_i / D_i against
    D_i s_i): those get v = y_i or −s_i; and whether there were any.

    The normal map reads the face from the sign of y − s. A solver stops with both
    positive on some rows, and on rows of tiny scale the larger of the two is not the
    one that decides: a row at 1e-6 inactive by 0.6 of its scale (s = 6e-7) with a
    multiplier of 3e-6 (negligible beside the 2e5 of its active neighbour) read as
    active, and no Newton step from there helped."""
    v = y - s
    lo, hi = st.dims.zero, st.dims.zero + st.dims.nonneg
    D = w[:, st.n + lo: st.n + hi]
    yo, so = y[:, lo:hi], s[:, lo:hi]
    active = sigma[:, None] * yo >= np.square(D) * so
    moved = active != (yo >= so)  # where the scale changes the face y − s gives
    if not moved.any():
        return v, False
    v[:, lo:hi] = np.where(moved, np.where(active, yo, -so), v[:, lo:hi])
    return v, True


def _line_search(st: Structure, data: np.ndarray, idx: np.ndarray, z: np.ndarray,
                 x: np.ndarray, v: np.ndarray, N: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Backtracking along the Newton steps ``z`` of the elements ``idx``: each moves to
    the first of α = 1, 1/2, …, 1/32 that decreases ||N|| enough (x, v, N and ``res``
    updated in place). Returns, per element of ``idx``, whether one did."""
    improved = np.zeros(idx.size, dtype=bool)
    for alpha in (1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 32):
        todo = ~improved
        sub = idx[todo]
        x_new = x[sub] + alpha * z[todo, : st.n]
        v_new = v[sub] + alpha * z[todo, st.n :]
        (d,) = rows(sub, data)
        N_new = normal_residual(st, d, x_new, v_new)
        r_new = np.linalg.norm(N_new, axis=1)
        ok = np.isfinite(r_new) & (r_new < (1 - 1e-4 * alpha) * res[sub])
        x[sub[ok]], v[sub[ok]], res[sub[ok]] = x_new[ok], v_new[ok], r_new[ok]
        N[sub[ok]] = N_new[ok]
        improved[np.flatnonzero(todo)[ok]] = True
        if improved.all():
            break
    return improved
