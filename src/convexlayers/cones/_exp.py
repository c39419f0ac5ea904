"""Projection onto the exponential cone and its derivative.

The exponential cone is ``K = cl{(x, y, z) : y > 0, y e^{x/y} <= z}``; its dual is
``K* = {(u, v, w) : u < 0, -u e^{v/u} <= e w} ∪ {(0, v, w) : v, w >= 0}`` and the
polar is ``-K*``. The projection of v0 = (x0, y0, z0) has four cases:

1. v0 ∈ K: Π = v0, DΠ = I.
2. v0 ∈ -K*: Π = 0, DΠ = 0.
3. x0 <= 0 and y0 <= 0: Π = (x0, 0, max(z0, 0)), DΠ = diag(1, 0, [z0 > 0]).
4. otherwise Π lies on the smooth part of the boundary, ``p = y (ρ, 1, e^ρ)``.

Case 4 follows Friberg (2023), "Projection onto the exponential cone: a
univariate root-finding problem", Optim. Methods Softw. 38(3). The optimality
conditions ``v0 = p + μ ∇f(p)`` with ``f = y e^{x/y} - z``,
``∇f = (e^ρ, (1 - ρ) e^ρ, -1)``, solved for the boundary point's y and for
``m = μ e^ρ`` give

    y(ρ) = ((ρ - 1) x0 + y0) / (ρ² - ρ + 1),   m(ρ) = (x0 - ρ y0) / (ρ² - ρ + 1),

and ρ is the unique root of ``h(ρ) = y(ρ) e^ρ - m(ρ) e^{-ρ} - z0`` on the interval
where y(ρ) > 0 and m(ρ) > 0. We bisect on the sign of h scaled by ``e^{-|ρ|}``
(no overflow), with an asinh-space midpoint while the bracket spans orders of
magnitude. The boundary point is then formed as ``y (ρ, 1, e^ρ)`` for ρ <= 0
and as ``w (ρ e^{-ρ}, e^{-ρ}, 1)`` with ``w = z0 + m e^{-ρ}`` for ρ > 0: each
form is well conditioned in ρ on its side, while ``y e^ρ`` for large ρ would
amplify the rounding error of y by e^ρ. As a last safeguard the candidate is
compared with the always-feasible points 0 and ``(min(x0, 0), 0, max(z0, 0))``,
which replace it only if clearly closer to v0 (see
:func:`convexlayers.cones._common.pick_candidate`).

Everything is computed on ``v0 / max|v0_i|`` (Π is positively homogeneous), so
inputs from 1e-300 to 1e300 are handled alike.

Derivative in case 4 (implicit differentiation, see
:func:`convexlayers.cones._common.boundary_jacobian`): the Hessian of f is
``(e^ρ / y) a aᵀ`` with ``a = (1, -ρ, 0)``, so ``M = I + μ ∇²f = I + (m / y) a aᵀ``,
whose inverse has eigenvalue ``γ = y / (y + m ||a||²)`` along a and 1 elsewhere,
finite even as y → 0 (the projection approaching the x <= 0, y = 0 face). γ and
∇f are passed as logarithms: for large |ρ| they span hundreds of decades.
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

# Region codes of the projection.
_INSIDE, _POLAR, _FACE, _ROOT, _ROOT_ZERO, _ROOT_FACE = range(6)
_RHO_MAX = 1e100  # |ρ| beyond this changes p by less than 1e-100 relative
_MAX_EXPAND = 64
_MAX_BISECT = 300


class _ExpState(NamedTuple):
    proj: np.ndarray  # (N, 3) projection of the scaled input
    region: np.ndarray  # (N,) region codes
    rho: np.ndarray  # (N,) root ρ (meaningful where region == _ROOT)
    log_gamma: np.ndarray  # (N,) log of the eigenvalue y / (y + m ||a||²) of M⁻¹ along a


def _exp_y_m(rho: np.ndarray, x: np.ndarray, y: np.ndarray):
    """y(ρ), m(ρ) and e^{-|ρ|} for the boundary parametrization."""
    den = rho * rho - rho + 1.0
    yy = ((rho - 1.0) * x + y) / den
    mm = (x - rho * y) / den
    t = np.exp(-np.abs(rho))
    return yy, mm, t


def _exp_residual_sign(rho, x, y, z) -> np.ndarray:
    """h(ρ) times e^{-|ρ|} (positive factor), computed without overflow."""
    yy, mm, t = _exp_y_m(rho, x, y)
    # ρ >= 0: h e^{-ρ} = y - m e^{-2ρ} - z e^{-ρ};  ρ < 0: h e^{ρ} = y e^{2ρ} - m - z e^{ρ}.
    return np.where(rho >= 0, yy - mm * t * t - z * t, yy * t * t - mm - z * t)


def _clip_rho(r: np.ndarray) -> np.ndarray:
    return np.clip(r, -_RHO_MAX, _RHO_MAX)


def _exp_bracket(x, y, z) -> tuple[np.ndarray, np.ndarray]:
    """Bracket [lo, hi] of the root with h(lo) <= 0 <= h(hi).

    Finite ends come from y(ρ) > 0 (ρ > 1 - y0/x0 when x0 > 0) and m(ρ) > 0
    (ρ < x0/y0 when y0 > 0); a missing end is found by doubling the distance to
    the other end: h -> +inf as ρ -> +inf and h < 0 for ρ -> -inf.
    """
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        lo = np.where(x > 0, _clip_rho(1.0 - y / np.where(x > 0, x, 1.0)), -np.inf)
        hi = np.where(y > 0, _clip_rho(x / np.where(y > 0, y, 1.0)), np.inf)
    open_hi = ~np.isfinite(hi)
    open_lo = ~np.isfinite(lo)
    anchor = np.where(open_hi, lo, hi)
    anchor = np.where(open_hi & open_lo, 0.0, anchor)
    step = np.maximum(1.0, 4.0 * EPS * np.abs(anchor))
    for _ in range(_MAX_EXPAND):
        cand_hi = _clip_rho(anchor + step)
        cand_lo = _clip_rho(anchor - step)
        ok_hi = ~open_hi | (_exp_residual_sign(cand_hi, x, y, z) > 0)
        ok_lo = ~open_lo | (_exp_residual_sign(cand_lo, x, y, z) < 0)
        hi = np.where(open_hi, cand_hi, hi)
        lo = np.where(open_lo, cand_lo, lo)
        if np.all(ok_hi & ok_lo):
            break
        step = np.where(ok_hi & ok_lo, step, 2.0 * step)
    return lo, hi


def _midpoint(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Arithmetic midpoint, or the midpoint in asinh space for wide brackets."""
    wide = (hi - lo) > 2.0 + np.minimum(np.abs(lo), np.abs(hi))
    geo = np.sinh(0.5 * (np.arcsinh(lo) + np.arcsinh(hi)))
    mid = np.where(wide, geo, lo + 0.5 * (hi - lo))
    return np.clip(mid, lo, hi)


def _exp_root(x, y, z) -> np.ndarray:
    """The root ρ of h on its bracket, to about one ulp (vectorized bisection)."""
    lo, hi = _exp_bracket(x, y, z)
    for _ in range(_MAX_BISECT):
        if np.all(hi - lo <= 2.0 * EPS * (1.0 + np.abs(lo) + np.abs(hi))):
            break
        mid = _midpoint(lo, hi)
        pos = _exp_residual_sign(mid, x, y, z) > 0
        hi = np.where(pos, mid, hi)
        lo = np.where(pos, lo, mid)
    return _midpoint(lo, hi)


def _exp_boundary_point(rho, x, y, z) -> tuple[np.ndarray, np.ndarray]:
    """Boundary point p(ρ) in the well-conditioned form, and m(ρ)."""
    yy, mm, t = _exp_y_m(rho, x, y)
    ypos = np.maximum(yy, 0.0)
    w = np.maximum(z + mm * t, 0.0)  # z_p = z0 + μ, with μ = m e^{-ρ}
    neg = rho <= 0
    p = np.where(
        neg[:, None],
        ypos[:, None] * np.stack([rho, np.ones_like(rho), t], axis=1),
        w[:, None] * np.stack([rho * t, t, np.ones_like(rho)], axis=1),
    )
    return p, np.maximum(mm, 0.0)


def _classify(x, y, z) -> np.ndarray:
    """Region codes _INSIDE, _POLAR, _FACE or _ROOT of scaled, finite points.

    The exponentials are compared in log form, which cannot overflow:
    ``y e^{x/y} <= z  <=>  x <= y (log z - log y)`` for y, z > 0 (K), and
    ``x e^{y/x} <= -e z  <=>  y <= x (1 + log(-z) - log x)`` for x > 0 > z (-K*).
    """
    inside = (y > 0) & (z > 0)
    inside &= x <= y * (safe_log(np.where(inside, z, 1.0)) - safe_log(np.where(inside, y, 1.0)))
    polar = (x > 0) & (z < 0)
    polar &= y <= x * (1.0 + safe_log(np.where(polar, -z, 1.0)) - safe_log(np.where(polar, x, 1.0)))
    region = np.full(x.shape, _ROOT)
    region[(x <= 0) & (y <= 0)] = _FACE
    region[polar] = _POLAR
    region[inside] = _INSIDE
    return region


def _exp_solve(v: np.ndarray) -> tuple[np.ndarray, _ExpState]:
    """Project rows of v onto K_exp; also return what the Jacobian needs."""
    scale, u, bad = row_scale(v)
    x, y, z = u[:, 0], u[:, 1], u[:, 2]
    region = _classify(x, y, z)
    region[bad | np.all(u == 0, axis=1)] = _POLAR
    proj = np.zeros_like(u)
    proj[region == _INSIDE] = u[region == _INSIDE]
    face_pt = np.stack([np.minimum(x, 0.0), np.zeros_like(x), np.maximum(z, 0.0)], axis=1)
    proj[region == _FACE] = face_pt[region == _FACE]
    rho = np.zeros_like(x)
    log_gamma = np.zeros_like(x)
    idx = np.flatnonzero(region == _ROOT)
    if idx.size:
        xr, yr, zr = x[idx], y[idx], z[idx]
        r = _exp_root(xr, yr, zr)
        p, mm = _exp_boundary_point(r, xr, yr, zr)
        # log y_p: for ρ > 0, y_p = z_p e^{-ρ} may underflow while its log does not.
        log_yp = np.where(r > 0, safe_log(p[:, 2]) - np.maximum(r, 0.0), safe_log(p[:, 1]))
        log_gamma[idx] = log_share(log_yp, safe_log(mm) + np.log1p(r * r))
        rho[idx] = r
        cands = np.stack([p, np.zeros_like(p), face_pt[idx]], axis=0)
        best = pick_candidate(cands, u[idx])
        proj[idx] = cands[best, np.arange(idx.size)]
        region[idx] = np.array([_ROOT, _ROOT_ZERO, _ROOT_FACE])[best]
    proj[bad] = np.nan
    return proj * scale[:, None], _ExpState(proj, region, rho, log_gamma)


def project_exp(v: np.ndarray) -> np.ndarray:
    """Project each row of ``v`` onto the exponential cone ``cl{y e^{x/y} <= z, y > 0}``.

    Args:
        v: (N, 3) array of points (x, y, z).

    Returns:
        (N, 3) array of projections. Rows with NaN or Inf give NaN.

    Example:
        >>> import numpy as np
        >>> project_exp(np.array([[-1.0, -2.0, 3.0]])).tolist()
        [[-1.0, 0.0, 3.0]]
    """
    v = as_cone_stack(v, 3, "v")
    return _exp_solve(v)[0]


def _exp_root_jacobian(rho: np.ndarray, log_gamma: np.ndarray) -> np.ndarray:
    """Boundary-case Jacobian, in the basis (â, â⊥, e_z) with â ∝ (1, -ρ, 0).

    ∇f = (e^ρ, (1 - ρ) e^ρ, -1) has components e^ρ (ρ² - ρ + 1)/s, e^ρ / s and -1
    along â = (1, -ρ)/s, â⊥ = (ρ, 1)/s and e_z, s = sqrt(1 + ρ²).
    """
    s = np.hypot(1.0, rho)
    e1 = np.stack([1.0 / s, -rho / s], axis=1)
    log_s = np.log(s)
    g_log = np.stack(
        [rho + np.log(rho * rho - rho + 1.0) - log_s, rho - log_s, np.zeros_like(rho)], axis=1
    )
    g_sign = np.broadcast_to(np.array([1.0, 1.0, -1.0]), g_log.shape)
    return boundary_jacobian(e1, log_gamma, g_sign, g_log)


def exp_projection_jacobian(v: np.ndarray) -> np.ndarray:
    """Jacobian of :func:`project_exp` at each row of ``v``.

    Args:
        v: (N, 3) array.

    Returns:
        (N, 3, 3) symmetric matrices with eigenvalues in [0, 1]. At points where
        the projection is not differentiable (region boundaries, v = 0) an element
        of the generalized Jacobian is returned; at v = 0 it is 0.
    """
    v = as_cone_stack(v, 3, "v")
    _, state = _exp_solve(v)
    n = v.shape[0]
    region = state.region
    jac = np.zeros((n, 3, 3))
    jac[region == _INSIDE] = np.eye(3)
    zpos = (state.proj[:, 2] > 0).astype(np.float64)
    face = region == _FACE
    jac[face, 0, 0] = 1.0
    jac[face, 2, 2] = zpos[face]
    rface = region == _ROOT_FACE
    jac[rface, 0, 0] = (state.proj[rface, 0] < 0).astype(np.float64)
    jac[rface, 2, 2] = zpos[rface]
    root = region == _ROOT
    if np.any(root):
        jac[root] = _exp_root_jacobian(state.rho[root], state.log_gamma[root])
    bad = ~np.isfinite(state.proj[:, 0])
    jac[bad] = np.nan
    return jac
