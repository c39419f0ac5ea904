"""Small helpers shared by the per-cone projection modules.

Nothing here is public. The per-cone functions all work on a stack of N cones
of the same kind, an array of shape ``(N, k)``, and return arrays of shape
``(N, k)`` (projections) or ``(N, k, k)`` (Jacobians).
"""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float64).eps)


def as_cone_stack(v: np.ndarray, k: int | None, name: str) -> np.ndarray:
    """Validate a stack of cone vectors and return it as a float64 (N, k) array.

    Args:
        v: array-like of shape (N, k).
        k: the required trailing dimension, or None to accept any.
        name: argument name used in error messages.

    Returns:
        A float64 array of shape (N, k) (possibly the input itself: callers never
        write into it).

    Raises:
        ValueError: if ``v`` is not two-dimensional or its last axis is not ``k``.
    """
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(
            f"`{name}` must have shape (N, k), one row per cone, got shape {arr.shape}; "
            "reshape a single cone vector to (1, k)."
        )
    if k is not None and arr.shape[1] != k:
        raise ValueError(f"`{name}` must have shape (N, {k}), got shape {arr.shape}.")
    return arr


def safe_log(x: np.ndarray) -> np.ndarray:
    """log(x) for x > 0 and -inf for x <= 0, without a divide-by-zero warning."""
    pos = x > 0
    return np.where(pos, np.log(np.where(pos, x, 1.0)), -np.inf)


def log_share(log_a: np.ndarray, log_b: np.ndarray) -> np.ndarray:
    """log(a / (a + b)) from log a and log b, a, b >= 0; 0 (share 1) when both are 0."""
    both_zero = np.isneginf(log_a) & np.isneginf(log_b)
    la = np.where(both_zero, 0.0, log_a)
    lb = np.where(both_zero, -np.inf, log_b)
    return la - np.logaddexp(la, lb)


def boundary_jacobian(
    e1: np.ndarray, log_gamma: np.ndarray, g_sign: np.ndarray, g_log: np.ndarray
) -> np.ndarray:
    """Jacobian of a 3-d projection whose result lies on a smooth boundary piece.

    If the projection p of v0 onto {f <= 0} satisfies ``p - v0 + μ ∇f(p) = 0``,
    ``f(p) = 0``, implicit differentiation gives

        [[M, ∇f], [∇fᵀ, 0]] [dp; dμ] = [dv0; 0],   M = I + μ ∇²f(p),

    so ``DΠ = M⁻¹ - M⁻¹ ∇f ∇fᵀ M⁻¹ / (∇fᵀ M⁻¹ ∇f)``, which is symmetric with
    eigenvalues in [0, 1] (it is ``M^{-1/2} (I - P) M^{-1/2}`` for a projector P).

    For both the exponential and the power cone, ``μ ∇²f`` has rank one with its
    range spanned by a unit vector ``e1`` of the (x, y) plane. In the orthonormal
    basis ``(e1, e1⊥, e_z)``, ``e1⊥ = (-e1_y, e1_x, 0)``, M⁻¹ is ``diag(γ, 1, 1)``
    and, with ``q_i = d_i g_i²`` (d = (γ, 1, 1)) and ``T = Σ q_i``,

        D'_ii = d_i (T - q_i) / T,    D'_ij = -s_i s_j sqrt(d_i q_i d_j q_j) / T,

    which is rotated back. The callers supply γ and ∇f in that basis from closed
    forms (products of a nearly parallel e1 and ∇f would cancel), and as logarithms:
    near the edges of the cones γ and the components of ∇f span hundreds of orders
    of magnitude, and only their ratios matter.

    Args:
        e1: (N, 2) unit vectors in the (x, y) plane.
        log_gamma: (N,) log of the eigenvalue γ ∈ [0, 1] of M⁻¹ along e1.
        g_sign: (N, 3) signs of the components of ∇f(p) in the basis (e1, e1⊥, e_z).
        g_log: (N, 3) logs of their absolute values (-inf for zero), up to a common
            additive constant per row.

    Returns:
        (N, 3, 3) stack of Jacobians in the original coordinates.
    """
    n = g_log.shape[0]
    log_d = np.stack([log_gamma, np.zeros(n), np.zeros(n)], axis=1)
    log_q = log_d + 2.0 * g_log
    top = np.max(log_q, axis=1)
    top = np.where(np.isfinite(top), top, 0.0)  # all q = 0: D' = diag(d) below
    q = np.exp(log_q - top[:, None])
    total = q.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    half = 0.5 * (log_d + log_q) - 0.5 * top[:, None]  # log sqrt(d_i q_i / e^top)
    amp = g_sign * np.exp(half)
    inner = -amp[:, :, None] * amp[:, None, :] / safe[:, None, None]
    others = np.stack([q[:, 1] + q[:, 2], q[:, 0] + q[:, 2], q[:, 0] + q[:, 1]], axis=1)
    d = np.exp(log_d)
    idx = np.arange(3)
    inner[:, idx, idx] = np.where(total[:, None] > 0, d * others / safe[:, None], d)
    rot = np.zeros((n, 3, 3))
    rot[:, 0, 0], rot[:, 1, 0] = e1[:, 0], e1[:, 1]
    rot[:, 0, 1], rot[:, 1, 1] = -e1[:, 1], e1[:, 0]
    rot[:, 2, 2] = 1.0
    jac = rot @ inner @ np.swapaxes(rot, 1, 2)
    return 0.5 * (jac + np.swapaxes(jac, 1, 2))


def pick_candidate(cands: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Index of the candidate projection to keep: the first unless another is clearly closer.

    The first candidate is the one computed by the root-find; the others are
    always-feasible fallbacks. Distances are compared through
    ``||v - c||² - ||v||² = <c, c - 2 v>``, and a fallback must win by more than
    the rounding error of that key, 16 eps ||v||². (Distances cannot see an error
    e tangent to the boundary below ||e|| ~ sqrt(eps) ||v||, so without the margin a
    correct tiny projection could lose a tie against the fallback 0.) The
    fallbacks thus only catch gross failures: a non-finite or far-off root.

    Args:
        cands: (C, N, d) candidate points, the root-find's first.
        v: (N, d) points being projected.

    Returns:
        (N,) integer indices into the first axis of cands.
    """
    key = np.sum(cands * (cands - 2.0 * v[None]), axis=2)
    key = np.where(np.isfinite(key), key, np.inf)
    key[1:] += 16.0 * EPS * np.sum(v * v, axis=1)
    return np.argmin(key, axis=0)


def row_scale(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each row of v into a scale and a unit-max-norm direction.

    Both the exponential and the power cone are cones, so Π(c v) = c Π(v) and
    DΠ(c v) = DΠ(v) for c > 0. Working on ``v / max|v_i|`` keeps every
    intermediate of the scalar root-finds in a safe floating-point range.

    Args:
        v: (N, d) array.

    Returns:
        ``(scale, u, bad)``: scale (N,) the max-abs of each row (1 where the row is
        zero or not finite), u (N, d) the scaled rows (zero for bad rows), and
        bad (N,) a mask of rows containing NaN or Inf.
    """
    scale = np.max(np.abs(v), axis=1, initial=0.0)
    bad = ~np.isfinite(scale)
    good_scale = np.where(bad | (scale == 0), 1.0, scale)
    u = np.where(bad[:, None], 0.0, v) / good_scale[:, None]
    return good_scale, u, bad
