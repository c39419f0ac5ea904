"""Newton refinement of a solver's solution on the normal map.

An interior-point or splitting solver stops at a tolerance (often 1e-8 on the
exponential and power cones, 1e-4 for SCS by default). At a nondegenerate
solution the normal map N(x, v) is smooth, and Newton's method on it — with
the same J as the derivative — converges quadratically from there:

    (x, v) ← (x, v) − J⁻¹ N(x, v),   then y = Π_{K*}(v), s = y − v.

A step is kept only where it lowers ||N||; where J is singular (a degenerate
solution) the solver's point is kept unchanged.
"""

from __future__ import annotations

import numpy as np

from convexlayers.cones import project_dual
from convexlayers.derivative._engine import SolutionDerivative
from convexlayers.derivative._linear import AbstractLinearSolver
from convexlayers.derivative._structure import Structure, a_matvec, a_rmatvec, p_matvec


def normal_residual(st: Structure, data: np.ndarray, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """N(x, v) for a batch: (B, n + m)."""
    p_vals, q, a_vals, b = st.split(data)
    y = project_dual(st.dims, v)
    r1 = p_matvec(st, p_vals, x) + a_rmatvec(st, a_vals, y) + q
    r2 = a_matvec(st, a_vals, x) + y - v - b
    return np.concatenate([r1, r2], axis=1)


def kkt_residual(st: Structure, data: np.ndarray, x: np.ndarray, y: np.ndarray,
                 s: np.ndarray) -> np.ndarray:
    """Relative normal-map residual ||N(x, y − s)|| / (1 + ||q|| + ||b||) per element."""
    _, q, _, b = st.split(data)
    res = np.linalg.norm(normal_residual(st, data, x, y - s), axis=1)
    return res / (1.0 + np.linalg.norm(q, axis=1) + np.linalg.norm(b, axis=1))


def refine(
    st: Structure,
    data: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    s: np.ndarray,
    linear_solver: AbstractLinearSolver | None = None,
    steps: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Improve (x, y, s) by up to ``steps`` safeguarded Newton steps on N."""
    v = y - s
    res = np.linalg.norm(normal_residual(st, data, x, v), axis=1)
    for _ in range(steps):
        deriv = SolutionDerivative(st, data, x, project_dual(st.dims, v),
                                   project_dual(st.dims, v) - v, linear_solver)
        z = deriv.solve(-normal_residual(st, data, x, v))
        x_new, v_new = x + z[:, : st.n], v + z[:, st.n :]
        res_new = np.linalg.norm(normal_residual(st, data, x_new, v_new), axis=1)
        better = np.isfinite(res_new) & (res_new < 0.5 * res)
        if not better.any():
            break
        x = np.where(better[:, None], x_new, x)
        v = np.where(better[:, None], v_new, v)
        res = np.where(better, res_new, res)
    y = project_dual(st.dims, v)
    return x, y, y - v
