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

import numpy as np

from convexlayers.cones import project_dual, svec_size
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


def _cone_blocks(dims) -> np.ndarray:
    """First row of each block of rows that must share one weight: each row of the zero
    cone and the orthant alone, each other cone whole (its scaling must be uniform)."""
    heads = [np.arange(dims.soc_start)]
    for sizes, start in ((dims.soc, dims.soc_start),
                         ([svec_size(k) for k in dims.psd], dims.psd_start),
                         ([3] * (dims.exp + len(dims.power)), dims.exp_start)):
        heads.append(start + np.cumsum([0, *sizes[:-1]]) if len(sizes) else np.zeros(0))
    return np.concatenate(heads).astype(np.int64)


def _inverse(size: np.ndarray) -> np.ndarray:
    """1 / size clipped to [1, _MAX_WEIGHT]; 1 where size is 0 (nothing to scale)."""
    return np.where(size > 0, 1.0 / np.clip(size, 1.0 / _MAX_WEIGHT, 1.0), 1.0)


def weights(st: Structure, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per element, weights W of N's entries (B, n + m) and the scale residuals are taken
    relative to (B,): a residual is that of the problem equilibrated to order one.

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
    row = np.maximum(np.sqrt(a_matvec(st, a2, np.ones((data.shape[0], st.n)))), np.abs(b))
    if row.shape[1]:
        heads = _cone_blocks(st.dims)
        row = np.repeat(np.maximum.reduceat(row, heads, axis=1), np.diff(np.r_[heads, st.m]),
                        axis=1)
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
    w = np.concatenate([np.minimum(_inverse(cost)[:, None] * E, _MAX_WEIGHT), D], axis=1)
    scale = 1.0 + np.linalg.norm(w[:, : st.n] * q, axis=1) + np.linalg.norm(
        w[:, st.n :] * b, axis=1)
    return w, scale


def relative(N: np.ndarray, w: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """||W N|| / (1 + ||W q|| + ||W b||) per element, N (B, n + m) a normal-map residual
    and (W, scale) from :func:`weights`."""
    return np.linalg.norm(w * N, axis=1) / scale


def kkt_residual(st: Structure, data: np.ndarray, x: np.ndarray, y: np.ndarray,
                 s: np.ndarray) -> np.ndarray:
    """Relative normal-map residual ||W N(x, y − s)|| / (1 + ||W q|| + ||W b||) per element
    (W: :func:`weights`)."""
    return relative(normal_residual(st, data, x, y - s), *weights(st, data))


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
    weighted: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, FactorStore, np.ndarray]:
    """Improve (x, y, s) by semismooth Newton steps on N with a backtracking line search.

    A full step can increase ||N|| when the solver's point sits on the wrong side of a
    nearly active constraint (D then describes the wrong face); halving the step until
    ||N|| decreases keeps every element's residual monotone. Elements stop once their
    residual is below ``tol`` (:func:`relative`) or no step helps.

    ``start``: N(x, y − s) (B, n + m), ``weighted``: :func:`weights`, if the caller has
    them.

    Returns:
        The polished (x, y, s), per element the factorization of its last Newton step
        (a J very close to the one at the returned point), for the derivative to reuse,
        and the relative residuals of the returned points.
    """
    store = FactorStore(x.shape[0])
    w, scale = weights(st, data) if weighted is None else weighted
    v = y - s
    # N(x, v) of the current points (kept up to date by the line search)
    N = normal_residual(st, data, x, v) if start is None else start.copy()
    res = np.linalg.norm(w * N, axis=1)
    active = res > tol * scale
    for _ in range(steps):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        yk = project_dual(st.dims, v[idx])
        (data_k,) = rows(idx, data)
        deriv = SolutionDerivative(st, data_k, x[idx], yk, yk - v[idx], linear_solver)
        z = deriv.solve(-N[idx])
        store.adopt(idx, deriv.store, np.arange(idx.size))
        improved = np.zeros(idx.size, dtype=bool)
        for alpha in (1.0, 0.5, 0.25, 0.125, 1 / 16, 1 / 32):
            todo = ~improved
            sub = idx[todo]
            x_new = x[sub] + alpha * z[todo, : st.n]
            v_new = v[sub] + alpha * z[todo, st.n :]
            (d,) = rows(sub, data)
            N_new = normal_residual(st, d, x_new, v_new)
            r_new = np.linalg.norm(w[sub] * N_new, axis=1)
            ok = np.isfinite(r_new) & (r_new < (1 - 1e-4 * alpha) * res[sub])
            x[sub[ok]], v[sub[ok]], res[sub[ok]] = x_new[ok], v_new[ok], r_new[ok]
            N[sub[ok]] = N_new[ok]
            improved[np.flatnonzero(todo)[ok]] = True
            if improved.all():
                break
        active[idx[~improved]] = False
        active &= res > tol * scale
    y = project_dual(st.dims, v)
    return x, y, y - v, store, res / scale
