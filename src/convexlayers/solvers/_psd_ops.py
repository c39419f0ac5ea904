"""PSD cones in the batched interior-point method: groups of cones of one order k.

A group is an array (B, c, d): c cones of order k per element, each the svec of a
symmetric k×k matrix (d = k(k+1)/2, the library's layout, :mod:`convexlayers.cones._psd`).
The Jordan product is ``U ∘ V = (UV + VU)/2``, the identity is I, eigenvalues are the
matrix's. The Nesterov–Todd scaling (Vandenberghe's CVXOPT, §4) at S, Z ≻ 0: with
factors S = L_s L_sᵀ, Z = L_z L_zᵀ and the SVD ``L_zᵀ L_s = U Λ Vᵀ``,
``R = L_s V Λ^{-1/2}`` and ``R⁻¹ = Λ^{-1/2} Uᵀ L_zᵀ``; then ``W(X) = Rᵀ X R`` maps both
Z and W⁻ᵀ(S) = R⁻¹ S R⁻ᵀ to Λ. W is not symmetric here: W⁻ᵀ(X) = R⁻¹ X R⁻ᵀ, and
(WᵀW)⁻¹(X) = G X G with G = R⁻ᵀ R⁻¹.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from convexlayers.cones._psd import smat, svec

_TINY = 1e-300


def identity(k: int) -> np.ndarray:
    """svec(I), (d,)."""
    return svec(np.eye(k))


def _sym(M: np.ndarray) -> np.ndarray:
    return 0.5 * (M + np.swapaxes(M, -1, -2))


def _eig(v: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues and vectors of smat(v); a non-finite matrix (a diverging element)
    reads as the identity, so that the rest of the batch is not lost to it."""
    M = smat(v, k)
    bad = ~np.isfinite(M).all(axis=(-1, -2))
    if bad.any():
        M[bad] = np.eye(k)
    return np.linalg.eigh(M)


def min_eig(v: np.ndarray, k: int) -> np.ndarray:
    """(B, c) least eigenvalues; -inf where v is not finite."""
    lo = _eig(v, k)[0][..., 0]
    return np.where(np.isfinite(v).all(axis=-1), lo, -np.inf)


def prod(u: np.ndarray, v: np.ndarray, k: int) -> np.ndarray:
    U, V = smat(u, k), smat(v, k)
    return svec(_sym(U @ V))


def diagonal_div(lam: np.ndarray, r: np.ndarray, k: int) -> np.ndarray:
    """X with λ ∘ X = r for λ = diag(``lam``) (B, c, k), the NT scaling's:
    X_ij = 2 r_ij / (λ_i + λ_j), entrywise on svec entries, whose weights cancel."""
    rows, cols = _svec_rows_cols(k)
    return 2.0 * r / np.maximum(lam[..., rows] + lam[..., cols], _TINY)


def diagonal_step(lam: np.ndarray, dv: np.ndarray, k: int) -> np.ndarray:
    """(B, c): the largest α with diag(``lam``) + α dV ⪰ 0: −1 / the least eigenvalue of
    Λ^{-1/2} dV Λ^{-1/2} (a scaling of entries), inf when it is nonnegative."""
    rows, cols = _svec_rows_cols(k)
    root = 1.0 / np.sqrt(np.maximum(lam, _TINY))
    T = smat(dv * root[..., rows] * root[..., cols], k)
    lo = np.linalg.eigvalsh(np.where(np.isfinite(T), T, 0.0))[..., 0]
    return np.where(lo < 0, -1.0 / np.where(lo < 0, lo, -1.0), np.inf)


def diagonal(lam: np.ndarray, k: int) -> np.ndarray:
    """svec(diag(``lam``))."""
    rows, cols = _svec_rows_cols(k)
    return np.where(rows == cols, lam[..., rows], 0.0)


@lru_cache(maxsize=32)
def _svec_rows_cols(k: int) -> tuple[np.ndarray, np.ndarray]:
    cols, rows = np.tril_indices(k)  # svec's order: (row ≤ col), column by column
    return rows, cols


def raise_to(v: np.ndarray, floor: np.ndarray, k: int) -> np.ndarray:
    """v moved by a multiple of I so that its eigenvalues are ≥ ``floor`` (B,)."""
    lift = np.maximum(0.0, floor[:, None] - min_eig(v, k))
    return v + lift[..., None] * identity(k)


def _factor(v: np.ndarray, k: int) -> np.ndarray:
    """L with smat(v) = L Lᵀ: Cholesky, or from eigenvalues (clamped positive) where
    Cholesky fails (an element pushed to the boundary by rounding)."""
    M = smat(v, k)
    try:
        return np.linalg.cholesky(M)
    except np.linalg.LinAlgError:
        w, Q = _eig(v, k)
        return Q * np.sqrt(np.maximum(w, _TINY))[..., None, :]


def scaling(s: np.ndarray, z: np.ndarray, k: int) -> tuple[np.ndarray, ...]:
    """(R, R⁻¹, λ) of the NT scaling at (s, z): R and R⁻¹ (B, c, k, k), and λ (B, c, k),
    the diagonal of W z = W⁻ᵀ s = Λ."""
    Ls, Lz = _factor(s, k), _factor(z, k)
    U, lam, Vt = np.linalg.svd(np.swapaxes(Lz, -1, -2) @ Ls)
    root = 1.0 / np.sqrt(np.maximum(lam, _TINY))
    R = (Ls @ np.swapaxes(Vt, -1, -2)) * root[..., None, :]
    Rinv = root[..., :, None] * (np.swapaxes(U, -1, -2) @ np.swapaxes(Lz, -1, -2))
    return R, Rinv, lam


def congruence(M: np.ndarray, v: np.ndarray, k: int, transpose: bool) -> np.ndarray:
    """svec(Mᵀ V M), or svec(M V Mᵀ) with ``transpose``."""
    Mt = np.swapaxes(M, -1, -2)
    left, right = (M, Mt) if transpose else (Mt, M)
    return svec(_sym(left @ smat(v, k) @ right))


@lru_cache(maxsize=32)
def _kron_index(k: int) -> tuple[np.ndarray, ...]:
    """For the svec entries (i, j) and (p, q): index grids and the factor of
    :func:`hessian_block`'s entries."""
    rows, cols = _svec_rows_cols(k)
    i, j = rows[:, None], cols[:, None]
    p, q = rows[None, :], cols[None, :]
    c = np.where(rows == cols, 1.0, np.sqrt(2.0))
    half = np.where(rows == cols, 0.5, 1.0)
    factor = c[:, None] / c[None, :] * half[None, :]
    return i, j, p, q, factor


def hessian_block(G: np.ndarray, k: int) -> np.ndarray:
    """(…, d, d): the matrix of X ↦ G X G in svec coordinates (G symmetric):
    entry ((i,j), (p,q)) = c_ij / c_pq · h_pq · (G_ip G_qj + G_iq G_pj), with c the svec
    weights (1 on the diagonal, √2 off it) and h = ½ on diagonal entries, 1 off them."""
    i, j, p, q, factor = _kron_index(k)
    return factor * (G[..., i, p] * G[..., q, j] + G[..., i, q] * G[..., p, j])
