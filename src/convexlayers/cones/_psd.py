"""The svec vectorisation, projection onto the PSD cone and its derivative.

svec (see :mod:`convexlayers.cones._dims`) stacks the upper triangle of a
symmetric k×k matrix column by column, ``(0,0), (0,1), (1,1), (0,2), ...``,
with the off-diagonal entries multiplied by √2, so that ``<svec X, svec Y> =
tr(X Y)``: svec is an isometry between symmetric matrices with the Frobenius
inner product and R^{k(k+1)/2}.

Projection: with the eigendecomposition ``X = U diag(λ) Uᵀ``,
``Π(X) = U diag(max(λ, 0)) Uᵀ``.

Derivative (Daleckii–Krein): ``DΠ(X)[H] = U (Γ ∘ (Uᵀ H U)) Uᵀ`` with
``Γ_ij = (λ_i⁺ - λ_j⁺) / (λ_i - λ_j)``, i.e. 1 if λ_i, λ_j > 0, 0 if both are
<= 0, and ``λ_+ / (λ_+ - λ_-)`` for a pair of opposite signs (no cancellation,
so Γ is evaluated exactly even for clustered eigenvalues). The symmetric
matrices ``U S_ij Uᵀ``, with ``S_ii = e_i e_iᵀ`` and
``S_ij = (e_i e_jᵀ + e_j e_iᵀ)/√2``, form an orthonormal eigenbasis of this map
with eigenvalues Γ_ij. Writing Q for the orthogonal t×t matrix whose columns are
their svecs (the symmetric Kronecker product U ⊛ U), the Jacobian in svec
coordinates is ``Q diag(Γ) Qᵀ``: symmetric, eigenvalues Γ_ij ∈ [0, 1] by
construction.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from convexlayers.cones._common import as_cone_stack
from convexlayers.cones._dims import svec_size

_SQRT2 = float(np.sqrt(2.0))


@lru_cache(maxsize=64)
def _svec_index(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices, column indices (row <= col) and weights of the svec entries."""
    cols, rows = np.tril_indices(k)  # row-major lower triangle = column-major upper
    weights = np.where(rows == cols, 1.0, _SQRT2)
    for arr in (rows, cols, weights):
        arr.setflags(write=False)
    return rows, cols, weights


def order_from_size(t: int) -> int:
    """The order k of a PSD cone with t = k(k+1)/2 svec rows."""
    k = (math.isqrt(8 * t + 1) - 1) // 2
    if svec_size(k) != t:
        raise ValueError(f"an svec vector has k(k+1)/2 entries for some integer k; got length {t}.")
    return k


def svec(x: np.ndarray) -> np.ndarray:
    """Vectorize symmetric matrices: (..., k, k) -> (..., k(k+1)/2).

    Only the upper triangle is read. Off-diagonal entries are scaled by √2 so that
    ``svec(X) @ svec(Y) == trace(X @ Y)`` for symmetric X, Y.

    Args:
        x: array of shape (..., k, k).

    Returns:
        Array of shape (..., k(k+1)/2), upper triangle in column-major order.

    Example:
        >>> import numpy as np
        >>> svec(np.array([[1.0, 2.0], [2.0, 3.0]])).round(4).tolist()
        [1.0, 2.8284, 3.0]
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"`x` must have shape (..., k, k), got shape {x.shape}.")
    rows, cols, weights = _svec_index(x.shape[-1])
    return x[..., rows, cols] * weights


def smat(v: np.ndarray, k: int | None = None) -> np.ndarray:
    """Inverse of :func:`svec`: (..., k(k+1)/2) -> symmetric (..., k, k).

    Args:
        v: array of shape (..., t) with t = k(k+1)/2.
        k: the matrix order; inferred from t when omitted.

    Returns:
        Symmetric array of shape (..., k, k).
    """
    v = np.asarray(v, dtype=np.float64)
    if v.ndim < 1:
        raise ValueError("`v` must have at least one axis, of length k(k+1)/2.")
    if k is None:
        k = order_from_size(v.shape[-1])
    elif svec_size(k) != v.shape[-1]:
        raise ValueError(f"`v` must have {svec_size(k)} entries for k={k}, got {v.shape[-1]}.")
    rows, cols, weights = _svec_index(k)
    out = np.zeros((*v.shape[:-1], k, k))
    vals = v / weights
    out[..., rows, cols] = vals
    out[..., cols, rows] = vals
    return out


def project_psd(v: np.ndarray, k: int) -> np.ndarray:
    """Project svec vectors onto the PSD cone of order k.

    Args:
        v: (N, k(k+1)/2) finite array of svec vectors.
        k: matrix order.

    Returns:
        (N, k(k+1)/2) svec of ``U diag(max(λ, 0)) Uᵀ``.
    """
    v = as_cone_stack(v, svec_size(k), "v")
    lam, u = np.linalg.eigh(smat(v, k))
    proj = (u * np.maximum(lam, 0.0)[:, None, :]) @ np.swapaxes(u, 1, 2)
    return svec(proj)


def _gamma(lam: np.ndarray) -> np.ndarray:
    """Divided differences Γ_ij of max(·, 0) at the eigenvalues, shape (N, k, k)."""
    li = lam[:, :, None]
    lj = lam[:, None, :]
    pos_i = li > 0
    pos_j = lj > 0
    gam = (pos_i & pos_j).astype(np.float64)
    mixed = pos_i ^ pos_j
    # For a mixed pair exactly one is > 0 and the other <= 0, so the gap is > 0.
    num = np.where(pos_i, li, lj)
    gap = np.abs(li - lj)
    safe_gap = np.where(mixed, gap, 1.0)
    return np.where(mixed, num / safe_gap, gam)


def _sym_kron(u: np.ndarray) -> np.ndarray:
    """Symmetric Kronecker product U ⊛ U in svec coordinates, shape (N, t, t).

    Column (i, j) is ``svec(U S_ij Uᵀ)``; entry ((p, q), (i, j)) equals
    ``w_pq w_ij (U_pi U_qj + U_pj U_qi) / 2`` with w = 1 on the diagonal and √2 off it.
    """
    rows, cols, weights = _svec_index(u.shape[-1])
    u_p, u_q = u[:, rows, :], u[:, cols, :]  # rows p and q of U for each svec row (p, q)
    prod = np.take(u_p, rows, axis=2) * np.take(u_q, cols, axis=2)
    prod += np.take(u_p, cols, axis=2) * np.take(u_q, rows, axis=2)
    prod *= 0.5 * weights[:, None] * weights[None, :]
    return prod


def psd_projection_jacobian(v: np.ndarray, k: int) -> np.ndarray:
    """Jacobian of :func:`project_psd` in svec coordinates.

    Cost: O(t³) = O(k⁶) per cone for the dense t×t result.

    Args:
        v: (N, k(k+1)/2) finite array of svec vectors.
        k: matrix order.

    Returns:
        (N, t, t) symmetric matrices, t = k(k+1)/2, with eigenvalues in [0, 1].
        At v = 0 (all eigenvalues zero) the Jacobian returned is 0.
    """
    v = as_cone_stack(v, svec_size(k), "v")
    lam, u = np.linalg.eigh(smat(v, k))
    rows, cols, _ = _svec_index(k)
    gam = _gamma(lam)[:, rows, cols]
    q = _sym_kron(u)
    jac = (q * gam[:, None, :]) @ np.swapaxes(q, 1, 2)
    return 0.5 * (jac + np.swapaxes(jac, 1, 2))  # exactly symmetric, not just to rounding
