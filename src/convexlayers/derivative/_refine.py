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

from convexlayers.cones import project_dual
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


def _scale(st: Structure, data: np.ndarray) -> np.ndarray:
    """1 + ||q|| + ||b|| per element: what residuals are relative to."""
    _, q, _, b = st.split(data)
    return 1.0 + np.linalg.norm(q, axis=1) + np.linalg.norm(b, axis=1)


def relative(st: Structure, data: np.ndarray, N: np.ndarray) -> np.ndarray:
    """||N|| / (1 + ||q|| + ||b||) per element, N (B, n + m) a normal-map residual."""
    return np.linalg.norm(N, axis=1) / _scale(st, data)


def kkt_residual(st: Structure, data: np.ndarray, x: np.ndarray, y: np.ndarray,
                 s: np.ndarray) -> np.ndarray:
    """Relative normal-map residual ||N(x, y − s)|| / (1 + ||q|| + ||b||) per element."""
    return relative(st, data, normal_residual(st, data, x, y - s))


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
) -> tuple[np.ndarray, np.ndarray, np.ndarray, FactorStore, np.ndarray]:
    """Improve (x, y, s) by semismooth Newton steps on N with a backtracking line search.

    A full step can increase ||N|| when the solver's point sits on the wrong side of a
    nearly active constraint (D then describes the wrong face); halving the step until
    ||N|| decreases keeps every element's residual monotone. Elements stop once their
    residual is below ``tol`` (relative to 1 + ||q|| + ||b||) or no step helps.

    ``start``: N(x, y − s) (B, n + m) if the caller has it.

    Returns:
        The polished (x, y, s), per element the factorization of its last Newton step
        (a J very close to the one at the returned point), for the derivative to reuse,
        and the relative residuals of the returned points.
    """
    store = FactorStore(x.shape[0])
    scale = _scale(st, data)
    v = y - s
    # N(x, v) of the current points (kept up to date by the line search)
    N = normal_residual(st, data, x, v) if start is None else start.copy()
    res = np.linalg.norm(N, axis=1)
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
            r_new = np.linalg.norm(N_new, axis=1)
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
