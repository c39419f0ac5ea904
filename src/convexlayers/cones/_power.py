"""Projection onto the 3-d power cone and its derivative.

The power cone with exponent a ∈ (0, 1) is
``K_a = {(x, y, z) : x^a y^{1-a} >= |z|, x >= 0, y >= 0}``, its dual is
``K_a* = {(u, v, w) : (u/a)^a (v/(1-a))^{1-a} >= |w|, u >= 0, v >= 0}`` and the
polar is ``-K_a*``. The projection of v0 = (x0, y0, z0) (Hien 2015,
"Differential properties of Euclidean projection onto power cone", Math. Meth.
Oper. Res. 82) is:

1. v0 ∈ K: Π = v0, DΠ = I.
2. v0 ∈ -K*: Π = 0, DΠ = 0.
3. z0 = 0: Π = (max(x0, 0), max(y0, 0), 0).
4. otherwise Π = (X(r), Y(r), sign(z0) r) where r ∈ (0, |z0|) is the root of
   ``Φ(r) = X^a Y^{1-a} - r`` with ``μ = |z0| - r`` and

       X = (x0 + sqrt(x0² + 4 a r μ)) / 2,   Y = (y0 + sqrt(y0² + 4 (1-a) r μ)) / 2.

These come from the optimality conditions ``v0 = p + μ ∇f(p)`` with
``f = |z| - x^a y^{1-a}``: the z-row gives ``μ = |z0| - r`` and the x- and
y-rows are quadratics in X and Y. X, Y are concave in r and so is Φ, with
Φ(0⁺) >= 0 > Φ(|z0|) in case 4: the root is unique. We bisect on
``s = logit(r / |z0|)``, i.e. ``r = |z0| σ(s)`` and ``μ = |z0| σ(-s)``, which
resolves both r and μ to full relative precision (a root very close to either
end of (0, |z0|) is common: near the cone or near z = 0), and read the sign of Φ
from logarithms, so that X, Y, r or μ below the floating-point range do not
matter. As in the exponential cone, the candidate is replaced by one of the
always-feasible points 0 and ``(x0⁺, y0⁺, 0)`` only if that is clearly closer.

Derivative in case 4 (see :func:`convexlayers.cones._common.boundary_jacobian`):
``∇f = (-a r/X, -(1-a) r/Y, sign z)`` and ``∇²f = a(1-a) r b bᵀ`` with
``b = (1/X, -1/Y, 0)``, so ``M = I + c b bᵀ``, ``c = μ a (1-a) r``, whose inverse
has eigenvalue ``γ = X² Y² / (X² Y² + c (X² + Y²))`` along ``b̂ ∝ (Y, -X, 0)``
and 1 elsewhere.

On the plane z0 = 0 (case 3 with x0 and y0 of opposite signs), the projection is
differentiable, with DΠ = diag([x0 > 0], [y0 > 0], c) where c is the limit of
dz/dz0 as z0 -> 0: if x0 > 0 > y0, r ∝ |z0|^{(1-a)/a} for a < 1/2 (c = 0),
μ ∝ |z0|^{a/(1-a)} for a > 1/2 (c = 1) and c = x0 / (x0 - 2 y0) for a = 1/2;
the case y0 > 0 > x0 is the same with a and 1 - a, x0 and y0 exchanged.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from convexlayers.cones._common import (
    EPS,
    as_cone_stack,
    boundary_jacobian,
    log_share,
    pick_candidate,
    row_scale,
    safe_log,
)

_INSIDE, _POLAR, _FACE, _ROOT, _ROOT_ZERO, _ROOT_FACE = range(6)
_S_MAX = 700.0  # σ(-700) ≈ 1e-304: r or μ below that is indistinguishable from 0
_MAX_BISECT = 200


class _PowState(NamedTuple):
    proj: np.ndarray  # (N, 3) projection of the scaled input
    region: np.ndarray  # (N,) region codes
    log_r: np.ndarray  # (N,) log |z| of the projection (region _ROOT)
    log_mu: np.ndarray  # (N,) log of the multiplier μ = |z0| - r (region _ROOT)
    log_x: np.ndarray  # (N,) log X (region _ROOT)
    log_y: np.ndarray  # (N,) log Y (region _ROOT)


def _as_alpha(alpha, n: int) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != n):
        raise ValueError(f"`alpha` must be a scalar or have shape ({n},), got shape {a.shape}.")
    a = np.broadcast_to(a, (n,))
    if np.any(~((a > 0) & (a < 1))):
        raise ValueError("power cone exponents `alpha` must lie in the open interval (0, 1).")
    return a


def _logistic_split(s: np.ndarray, absz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """r = |z| σ(s) and μ = |z| σ(-s), each to full relative precision."""
    e = np.exp(-np.abs(s))
    big = absz / (1.0 + e)
    small = absz * e / (1.0 + e)
    pos = s >= 0
    return np.where(pos, big, small), np.where(pos, small, big)


def _half_root(x0: np.ndarray, q: np.ndarray) -> np.ndarray:
    """(x0 + sqrt(x0² + q)) / 2 without cancellation, for q >= 0."""
    root = np.sqrt(x0 * x0 + q)
    neg = x0 < 0
    den = np.where(neg, root - x0, 1.0)
    return np.where(neg, 0.5 * q / den, 0.5 * (x0 + root))


def _xy_of(r, mu, x, y, a):
    rm = 4.0 * r * mu
    return _half_root(x, a * rm), _half_root(y, (1.0 - a) * rm)


def _log_half_root(x0: np.ndarray, log_q: np.ndarray) -> np.ndarray:
    """log((x0 + sqrt(x0² + q)) / 2) from log q, finite even where q underflows.

    Uses ``(x0 + S)/2 = q / (2 (S - x0))`` for x0 < 0 and ``sqrt(q)/2`` for x0 = 0.
    """
    root = np.sqrt(x0 * x0 + np.exp(log_q))
    neg, pos = x0 < 0, x0 > 0
    from_neg = log_q - np.log(2.0 * np.where(neg, root - x0, 1.0))
    from_pos = np.log(0.5 * np.where(pos, x0 + root, 1.0))
    return np.where(neg, from_neg, np.where(pos, from_pos, 0.5 * log_q - np.log(2.0)))


def _log_xy_of(log_r, log_mu, x, y, a):
    log_rm = np.log(4.0) + log_r + log_mu
    return _log_half_root(x, np.log(a) + log_rm), _log_half_root(y, np.log1p(-a) + log_rm)


def _split_logs(s: np.ndarray, log_absz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log r and log μ for r = |z| σ(s), μ = |z| σ(-s)."""
    return log_absz - np.logaddexp(0.0, -s), log_absz - np.logaddexp(0.0, s)


def _power_root(x, y, absz, a) -> np.ndarray:
    """The parameter s of the root of Φ, r = |z0| σ(s) (vectorized bisection).

    The sign of Φ = X^a Y^{1-a} - r is read off ``a log X + (1-a) log Y - log r``,
    which stays accurate where X, Y or r are below the floating-point range.
    """
    log_absz = np.log(absz)
    lo = np.full(x.shape, -_S_MAX)
    hi = np.full(x.shape, _S_MAX)
    for _ in range(_MAX_BISECT):
        if np.all(hi - lo <= 4.0 * EPS * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))):
            break
        mid = lo + 0.5 * (hi - lo)
        log_r, log_mu = _split_logs(mid, log_absz)
        log_x, log_y = _log_xy_of(log_r, log_mu, x, y, a)
        pos = a * log_x + (1.0 - a) * log_y > log_r
        lo = np.where(pos, mid, lo)
        hi = np.where(pos, hi, mid)
    return lo + 0.5 * (hi - lo)


def _classify(x, y, z, a) -> np.ndarray:
    region = np.full(x.shape, _ROOT)
    absz = np.abs(z)
    inside = (x >= 0) & (y >= 0)
    inside &= np.power(np.maximum(x, 0.0), a) * np.power(np.maximum(y, 0.0), 1.0 - a) >= absz
    polar = (x <= 0) & (y <= 0)
    polar &= (
        np.power(np.maximum(-x, 0.0) / a, a) * np.power(np.maximum(-y, 0.0) / (1.0 - a), 1.0 - a)
        >= absz
    )
    region[z == 0] = _FACE
    region[polar] = _POLAR
    region[inside] = _INSIDE
    return region


def _power_solve(v: np.ndarray, a: np.ndarray) -> tuple[np.ndarray, _PowState]:
    scale, u, bad = row_scale(v)
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    region = _classify(x, y, z, a)
    region[bad | np.all(u == 0, axis=1)] = _POLAR
    proj = np.zeros_like(u)
    proj[region == _INSIDE] = u[region == _INSIDE]
    face_pt = np.stack([np.maximum(x, 0.0), np.maximum(y, 0.0), np.zeros_like(x)], axis=1)
    proj[region == _FACE] = face_pt[region == _FACE]
    logs = np.zeros((4, x.size))
    idx = np.flatnonzero(region == _ROOT)
    if idx.size:
        xr, yr, zr, ar = x[idx], y[idx], z[idx], a[idx]
        absz = np.abs(zr)
        s_root = _power_root(xr, yr, absz, ar)
        r, mu = _logistic_split(s_root, absz)
        xx, yy = _xy_of(r, mu, xr, yr, ar)
        log_r, log_mu = _split_logs(s_root, np.log(absz))
        logs[:, idx] = [log_r, log_mu, *_log_xy_of(log_r, log_mu, xr, yr, ar)]
        p = np.stack([xx, yy, np.sign(zr) * r], axis=1)
        cands = np.stack([p, np.zeros_like(p), face_pt[idx]], axis=0)
        best = pick_candidate(cands, u[idx])
        proj[idx] = cands[best, np.arange(idx.size)]
        region[idx] = np.array([_ROOT, _ROOT_ZERO, _ROOT_FACE])[best]
    proj[bad] = np.nan
    return proj * scale[:, None], _PowState(proj, region, *logs)


def project_power(v: np.ndarray, alpha) -> np.ndarray:
    """Project each row of ``v`` onto the power cone ``x^a y^{1-a} >= |z|, x, y >= 0``.

    Args:
        v: (N, 3) array of points (x, y, z).
        alpha: exponent of each cone, scalar or shape (N,), values in (0, 1).

    Returns:
        (N, 3) array of projections. Rows with NaN or Inf give NaN.

    Example:
        >>> import numpy as np
        >>> project_power(np.array([[2.0, -1.0, 0.0]]), 0.5).tolist()
        [[2.0, 0.0, 0.0]]
    """
    v = as_cone_stack(v, 3, "v")
    return _power_solve(v, _as_alpha(alpha, v.shape[0]))[0]


def _power_root_jacobian(sz, log_r, log_mu, log_x, log_y, a) -> np.ndarray:
    """Boundary-case Jacobian, in the basis (b̂, b̂⊥, e_z) with b̂ ∝ (Y, -X, 0).

    With ∇f = (-a r/X, -(1-a) r/Y, sign z) and h = ||(X, Y)||:
    ∇f·b̂ = r ((1-a) X² - a Y²)/(X Y h) and ∇f·b̂⊥ = -r/h. Times X Y h / r, using
    r = X^a Y^{1-a}, the components are ((1-a) X² - a Y², -X Y, sign(z) h X^{1-a} Y^a).
    Everything is formed from logarithms relative to max(X, Y).
    """
    top = np.maximum(log_x, log_y)
    ex, ey = np.exp(log_x - top), np.exp(log_y - top)  # X, Y / max(X, Y)
    hn = np.hypot(ex, ey)
    e1 = np.stack([ey / hn, -ex / hn], axis=1)
    g1 = (1.0 - a) * ex * ex - a * ey * ey
    log_h = top + np.log(hn)
    g_log = np.stack(
        [
            2.0 * top + safe_log(np.abs(g1)),
            log_x + log_y,
            log_h + (1.0 - a) * log_x + a * log_y,
        ],
        axis=1,
    )
    g_sign = np.stack([np.sign(g1), -np.ones_like(g1), sz], axis=1)
    # γ = X²Y² / (X²Y² + c h²), c = μ a (1-a) r.
    log_c = log_mu + np.log(a) + np.log1p(-a) + log_r
    log_gamma = log_share(2.0 * (log_x + log_y), log_c + 2.0 * log_h)
    return boundary_jacobian(e1, log_gamma, g_sign, g_log)


def _face_zz(x: np.ndarray, y: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Limit of dz/dz0 on the plane z0 = 0 (see the module docstring)."""
    xpos = x > 0
    big, small = np.where(xpos, x, y), np.where(xpos, y, x)
    expo = np.where(xpos, a, 1.0 - a)  # exponent of the positive coordinate
    den = big - 2.0 * small
    half = big / np.where(den > 0, den, 1.0)
    czz = np.where(expo > 0.5, 1.0, np.where(expo < 0.5, 0.0, half))
    return np.where((x > 0) ^ (y > 0), czz, 0.0)


def power_projection_jacobian(v: np.ndarray, alpha) -> np.ndarray:
    """Jacobian of :func:`project_power` at each row of ``v``.

    Args:
        v: (N, 3) array.
        alpha: exponent of each cone, scalar or shape (N,).

    Returns:
        (N, 3, 3) symmetric matrices with eigenvalues in [0, 1] (0 at v = 0).
    """
    v = as_cone_stack(v, 3, "v")
    a = _as_alpha(alpha, v.shape[0])
    _, state = _power_solve(v, a)
    region, proj = state.region, state.proj
    jac = np.zeros((v.shape[0], 3, 3))
    jac[region == _INSIDE] = np.eye(3)
    face = (region == _FACE) | (region == _ROOT_FACE)
    _, u, _ = row_scale(v)
    jac[face, 0, 0] = (proj[face, 0] > 0).astype(np.float64)
    jac[face, 1, 1] = (proj[face, 1] > 0).astype(np.float64)
    jac[face, 2, 2] = _face_zz(u[face, 0], u[face, 1], a[face])
    root = region == _ROOT
    if np.any(root):
        jac[root] = _power_root_jacobian(
            np.sign(proj[root, 2]),
            state.log_r[root],
            state.log_mu[root],
            state.log_x[root],
            state.log_y[root],
            a[root],
        )
    jac[~np.isfinite(proj[:, 0])] = np.nan
    return jac
