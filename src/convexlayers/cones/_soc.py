"""Projection onto the second-order cone and its derivative.

The second-order (Lorentz) cone of dimension k is
``Q = {(t, z) ∈ R × R^{k-1} : ||z||_2 <= t}``; it is self-dual. With r = ||z||,
the Euclidean projection is (e.g. Parikh & Boyd, "Proximal Algorithms", §6.3.2)

    Π(t, z) = (t, z)                          if r <= t,
            = 0                               if r <= -t,
            = (t + r) / 2 · (1, z / r)         otherwise.

In the third region the Jacobian is

    DΠ = 1/2 [[1, ẑᵀ], [ẑ, (1 + t/r) I - (t/r) ẑ ẑᵀ]],   ẑ = z / r,

whose eigenvalues are 0, 1 and (1 + t/r)/2 ∈ (0, 1). The first two regions
give I and 0. On the boundaries between regions we return the Jacobian of the
region tested first (0, then I), in particular 0 at v = 0.
"""

from __future__ import annotations

import numpy as np

from convexlayers.cones._common import as_cone_stack


def _split(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t, z and r = ||z||, the norm taken after scaling so that it cannot overflow."""
    t = v[:, 0]
    z = v[:, 1:]
    big = np.max(np.abs(z), axis=1, initial=0.0)
    safe = np.where(big > 0, big, 1.0)
    r = safe * np.linalg.norm(z / safe[:, None], axis=1)
    return t, z, r


def _regions(t: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks of the regions Π = 0 (r <= -t, tested first), Π = v (r <= t), and the rest."""
    zero = r <= -t
    inside = (r <= t) & ~zero
    return zero, inside, ~(zero | inside)


def project_soc(v: np.ndarray) -> np.ndarray:
    """Project each row of ``v`` onto the second-order cone ``{(t, z): ||z|| <= t}``.

    Args:
        v: (N, k) finite array, one cone vector per row (k >= 1; for k = 1 the cone
            is R₊).

    Returns:
        (N, k) array of projections.

    Example:
        >>> import numpy as np
        >>> project_soc(np.array([[0.0, 2.0, 0.0]])).tolist()
        [[1.0, 1.0, 0.0]]
    """
    v = as_cone_stack(v, None, "v")
    t, z, r = _split(v)
    out = np.zeros_like(v)
    _, inside, mid = _regions(t, r)
    out[inside] = v[inside]
    if np.any(mid):
        tm, zm, rm = t[mid], z[mid], r[mid]
        half = 0.5 * (tm + rm)
        out[mid, 0] = half
        out[mid, 1:] = (half / rm)[:, None] * zm
    return out


def soc_jacobian_parts(v: np.ndarray) -> tuple[np.ndarray, ...]:
    """The Jacobian of :func:`project_soc` at each row of ``v`` in factored form,
    DΠ = diag(δ) + h e₀ᵀ + e₀ hᵀ + γ w wᵀ, in O(k) memory per cone.

    Outside the cone and its polar: δ = ½ (1, 1 + ρ, …, 1 + ρ), h = ½ (0, ẑ),
    w = (0, ẑ), γ = −ρ/2 (ρ = t/r); inside: δ = 1; on the polar: δ = 0 (and h, w, γ 0).

    Args:
        v: (N, k) finite array.

    Returns:
        δ, h, w (N, k) and γ (N,).
    """
    v = as_cone_stack(v, None, "v")
    n, k = v.shape
    t, z, r = _split(v)
    _, inside, mid = _regions(t, r)
    delta, head, w = np.zeros((n, k)), np.zeros((n, k)), np.zeros((n, k))
    gamma = np.zeros(n)
    delta[inside] = 1.0
    if mid.any():
        rm = r[mid]
        zhat = z[mid] / rm[:, None]
        ratio = t[mid] / rm
        delta[mid, 0] = 0.5
        delta[mid, 1:] = 0.5 * (1.0 + ratio)[:, None]
        head[mid, 1:] = 0.5 * zhat
        w[mid, 1:] = zhat
        gamma[mid] = -0.5 * ratio
    return delta, head, w, gamma


def soc_projection_jacobian(v: np.ndarray) -> np.ndarray:
    """Jacobian of :func:`project_soc` at each row of ``v``.

    Args:
        v: (N, k) finite array.

    Returns:
        (N, k, k) symmetric matrices with eigenvalues in [0, 1] (0 at v = 0).
    """
    return soc_dense(*soc_jacobian_parts(v))


def soc_dense(delta, head, w, gamma) -> np.ndarray:
    """The (..., k, k) matrices diag(δ) + h e₀ᵀ + e₀ hᵀ + γ w wᵀ of :func:`soc_jacobian_parts`
    (one pass over the k × k entries)."""
    k = delta.shape[-1]
    jac = np.multiply((gamma[..., None] * w)[..., :, None], w[..., None, :])
    idx = np.arange(k)
    jac[..., idx, idx] += delta
    jac[..., 0, 1:] += head[..., 1:]
    jac[..., 1:, 0] += head[..., 1:]
    return jac
