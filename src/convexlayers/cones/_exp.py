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
(lo, hi) where y(ρ) > 0 and m(ρ) > 0. Writing ``ã = den·y`` and ``b̃ = den·m``
(den = ρ² - ρ + 1), h has the sign of ``φ(ρ) = log A - log B`` with
``A = ã e^ρ + den max(-z0, 0)`` and ``B = b̃ e^{-ρ} + den max(z0, 0)``; φ is
evaluated in log space (no overflow), with ``ã = x0 (ρ - lo)`` and
``b̃ = y0 (hi - ρ)`` at finite ends (no cancellation next to them). φ is nearly
linear far from the ends and logarithmic next to them, so the root-find
(:func:`convexlayers.cones._common.safeguarded_newton`) takes Newton steps in the
log of the distance to the end it moves towards
(:func:`convexlayers.cones._common.log_model_step`). It starts at 0, or next to
the nearer end of an interval not containing 0, and typically takes five to
seven steps; in the scaled variables the root also lies in [-800, 800] unless
an end lies beyond, which bounds the bracket of its bisection fallback.
The boundary point is then formed as ``y (ρ, 1, e^ρ)`` for ρ <= 0
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
    NOISE_TOL,
    PLUS_MINUS,
    as_cone_stack,
    boundary_jacobian,
    log_model_step,
    log_share,
    pick_candidate,
    row_scale,
    safeguarded_newton,
)

# Region codes of the projection.
_INSIDE, _POLAR, _FACE, _ROOT, _ROOT_ZERO, _ROOT_FACE = range(6)
_ROOT_CODES = np.array([_ROOT, _ROOT_ZERO, _ROOT_FACE])
_RHO_MAX = 1e100  # |ρ| beyond this changes p by less than 1e-100 relative
_RHO_CAP = 800.0  # in scaled variables φ(-800) < 0 < φ(800) unless an end is beyond
_DIST_MAX = 1e200  # effective distance to an open end of the interval
_FACE_LO = np.array([-np.inf, 0.0, 0.0])  # (min(x0, 0), 0, max(z0, 0)) by clipping
_FACE_HI = np.array([0.0, 0.0, np.inf])
_G_SIGN = np.array([[1.0], [1.0], [-1.0]])


class _ExpState(NamedTuple):
    proj: np.ndarray  # (N, 3) projection of the scaled input
    region: np.ndarray  # (N,) region codes
    rho: np.ndarray  # (N,) root ρ (meaningful where region == _ROOT)
    log_gamma: np.ndarray  # (N,) log of the eigenvalue y / (y + m ||a||²) of M⁻¹ along a


def _exp_setup(x, y, z) -> tuple[tuple, np.ndarray, np.ndarray, np.ndarray]:
    """Coefficients of φ (see :func:`_exp_newton`), bracket and starting point.

    The ends of the interval are lo = 1 - y0/x0 (x0 > 0) and hi = x0/y0 (y0 > 0),
    clipped to ±_RHO_MAX; a missing end is -/+_RHO_MAX. At an unclipped finite
    end, ã or b̃ is formed as a multiple of the distance to it; otherwise as
    ``(ρ - 1) x0 + y0`` or ``x0 - ρ y0``, which then do not cancel.
    """
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        lo = np.where(x > 0, 1.0 - y / x, -np.inf)
        hi = np.where(y > 0, x / y, np.inf)
        log_zn, log_zp = np.log(np.maximum(-z, 0.0)), np.log(np.maximum(z, 0.0))
    fin_lo, fin_hi = np.abs(lo) <= _RHO_MAX, np.abs(hi) <= _RHO_MAX
    lo = np.minimum(np.maximum(lo, -_RHO_MAX), _RHO_MAX)
    hi = np.minimum(np.maximum(hi, -_RHO_MAX), _RHO_MAX)
    rows = np.array(
        [
            *(x, y),  # ã = x0 (ρ - ra) + ca,  b̃ = y0 (rb - ρ) + cb
            *(np.where(fin_lo, -lo, -1.0), np.where(fin_hi, hi, 0.0)),
            *(np.where(fin_lo, 0.0, y), np.where(fin_hi, 0.0, x)),
            *(log_zn, log_zp, -lo, hi),
            np.nextafter(lo, hi),  # strictly inside (lo, hi) when lo < hi
            np.nextafter(hi, lo),
        ]
    )
    coef = (rows[0:2], rows[2:4], rows[4:6], rows[6:8], rows[8:10], rows[10], rows[11])
    lo_cap = np.maximum(lo, np.minimum(hi - 1.0, -_RHO_CAP))
    hi_cap = np.minimum(hi, np.maximum(lo + 1.0, _RHO_CAP))
    half = 0.5 * np.minimum(hi_cap - lo_cap, 1.0)
    start = np.minimum(np.maximum(0.0, lo_cap + half), hi_cap - half)
    return coef, lo_cap, hi_cap, start


def _exp_newton(rho: np.ndarray, coef: tuple):
    """φ(ρ), the next iterate and the rounding error of φ, for the root-find.

    With the shares ``wA = ã e^ρ / A`` and ``wB = b̃ e^{-ρ} / B``,
    ``φ' = wA (1 + x0/ã) + wB (1 + y0/b̃) + (wB - wA)(2ρ - 1)/den``. The step
    towards lo (φ > 0) treats lo - (ρ - lo)(1/wA - 1) as the end, where A,
    continued linearly in ã, would vanish; likewise towards hi.
    """
    xy, ref, c0, log_z, ends, in_lo, in_hi = coef
    rho2 = PLUS_MINUS * rho  # (ρ, -ρ)
    ab = xy * (rho2 + ref) + c0
    rm1 = rho - 1.0
    den = rho * rm1 + 1.0
    u = np.log(ab) + rho2  # log(ã e^ρ), log(b̃ e^{-ρ})
    big = np.logaddexp(u, np.log(den) + log_z)  # log A, log B
    log_a, log_b = big
    f = log_a - log_b
    w = np.exp(u - big)
    g_a, g_b = w * (xy / ab + 1.0)
    slope = g_a + g_b + (w[1] - w[0]) * ((rho + rm1) / den)
    left = f > 0
    dist = (rho2 + ends) / w
    dist = np.fmin(np.where(left, dist[0], dist[1]), _DIST_MAX)
    step = dist * np.expm1(log_model_step(np.abs(f), slope * dist, 1.0, refine=False))
    cand = np.minimum(np.maximum(rho + np.where(left, step, -step), in_lo), in_hi)
    return f, cand, (np.abs(log_a) + 0.5) * (2.0 * NOISE_TOL)  # log A ≈ log B near the root


def _exp_root(x, y, z) -> np.ndarray:
    """The root ρ of h on its interval, to a few ulps."""
    coef, lo, hi, start = _exp_setup(x, y, z)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return safeguarded_newton(_exp_newton, coef, lo, hi, start)


def _exp_boundary_point(rho, x, y, z) -> tuple[np.ndarray, np.ndarray]:
    """Boundary point p(ρ) in the well-conditioned form, and m(ρ).

    ρ <= 0: p = y_p (ρ, 1, e^ρ);  ρ > 0: p = z_p (ρ e^{-ρ}, e^{-ρ}, 1) with
    z_p = z0 + m e^{-ρ}.
    """
    den = rho * rho - rho + 1.0
    y_p = np.maximum(((rho - 1.0) * x + y) / den, 0.0)
    m = (x - rho * y) / den
    t = np.exp(-np.abs(rho))
    z_p = np.maximum(z + m * t, 0.0)
    neg = rho <= 0
    p_y = np.where(neg, y_p, z_p * t)
    return np.array([p_y * rho, p_y, np.where(neg, y_p * t, z_p)]).T, m


def _exp_log_gamma(rho: np.ndarray, p: np.ndarray, m: np.ndarray) -> np.ndarray:
    """log γ = log(y_p / (y_p + m (1 + ρ²))) at the boundary point p(ρ).

    For ρ > 0, y_p = z_p e^{-ρ} may underflow while its log does not.
    """
    with np.errstate(divide="ignore"):
        log_yp = np.where(rho <= 0, np.log(p[:, 1]), np.log(p[:, 2]) - rho)
        return log_share(log_yp, np.log(np.maximum(m, 0.0)) + np.log1p(rho * rho))


def _classify(u: np.ndarray) -> np.ndarray:
    """Region codes _INSIDE, _POLAR, _FACE or _ROOT of scaled, finite points.

    The exponentials are compared in log form, which cannot overflow:
    ``y e^{x/y} <= z  <=>  x <= y (log z - log y)`` for y, z > 0 (K), and
    ``x e^{y/x} <= -e z  <=>  y <= x (1 + log(-z) - log x)`` for x > 0 > z (-K*).
    """
    x, y, z = u.T
    with np.errstate(divide="ignore", invalid="ignore"):
        log_x, log_y, log_z = np.log(np.abs(u)).T
        inside = (y > 0) & (z > 0) & (x <= y * (log_z - log_y))
        polar = (x > 0) & (z < 0) & (y <= x * (1.0 + log_z - log_x))
    rest = np.where((x <= 0) & (y <= 0), _FACE, _ROOT)
    return np.where(inside, _INSIDE, np.where(polar, _POLAR, rest))


def _exp_solve(v: np.ndarray, jacobian: bool) -> tuple[np.ndarray, _ExpState]:
    """Project rows of v onto K_exp; also return what the Jacobian needs (if asked)."""
    scale, u, bad, zero = row_scale(v)
    region = _classify(u)
    region[bad | zero] = _POLAR
    face_pt = np.minimum(np.maximum(u, _FACE_LO), _FACE_HI)
    code = region[:, None]
    proj = np.where(code == _INSIDE, u, np.where(code == _FACE, face_pt, 0.0))
    rho = np.zeros(u.shape[0])
    log_gamma = np.zeros(u.shape[0])
    idx = np.flatnonzero(region == _ROOT)
    if idx.size:
        ur = u[idx]
        xr, yr, zr = ur.T
        r = _exp_root(xr, yr, zr)
        p, m = _exp_boundary_point(r, xr, yr, zr)
        choice, proj[idx] = pick_candidate(p, face_pt[idx], ur)
        region[idx] = _ROOT_CODES[choice]
        if jacobian:
            rho[idx] = r
            log_gamma[idx] = _exp_log_gamma(r, p, m)
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
    return _exp_solve(v, jacobian=False)[0]


def _exp_root_jacobian(rho: np.ndarray, log_gamma: np.ndarray) -> np.ndarray:
    """Boundary-case Jacobian, in the basis (â, â⊥, e_z) with â ∝ (1, -ρ, 0).

    ∇f = (e^ρ, (1 - ρ) e^ρ, -1) has components e^ρ (ρ² - ρ + 1)/s, e^ρ / s and -1
    along â = (1, -ρ)/s, â⊥ = (ρ, 1)/s and e_z, s = sqrt(1 + ρ²).
    """
    s = np.hypot(1.0, rho)
    e1 = np.array([1.0 / s, -rho / s])
    rho_s = rho - np.log(s)
    g_log = np.array([rho_s + np.log(rho * rho - rho + 1.0), rho_s, np.zeros_like(rho)])
    return boundary_jacobian(e1, log_gamma, _G_SIGN, g_log)


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
    _, state = _exp_solve(v, jacobian=True)
    region, proj = state.region, state.proj
    inside, face, rface = region == _INSIDE, region == _FACE, region == _ROOT_FACE
    # Diagonal cases: I in K; diag(1, 0, [z > 0]) on the face, diag([x < 0], 0, [z > 0])
    # where the face point won the candidate comparison.
    diag = np.array(
        [
            inside | face | (rface & (proj[:, 0] < 0)),
            inside,
            inside | ((face | rface) & (proj[:, 2] > 0)),
        ]
    )
    jac = diag.T[:, :, None] * np.eye(3)
    root = np.flatnonzero(region == _ROOT)
    if root.size:
        jac[root] = _exp_root_jacobian(state.rho[root], state.log_gamma[root])
    jac[~np.isfinite(proj[:, 0])] = np.nan
    return jac
