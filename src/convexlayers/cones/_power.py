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
Φ(0⁺) >= 0 > Φ(|z0|) in case 4: the root is unique. We solve for
``s = logit(r / |z0|)``, i.e. ``r = |z0| σ(s)`` and ``μ = |z0| σ(-s)``, which
resolves both r and μ to full relative precision (a root very close to either
end of (0, |z0|) is common: near the cone or near z = 0), through the increasing
``G = log r - a log X - (1-a) log Y``, formed from logarithms so that X, Y, r or
μ below the floating-point range do not matter. As a function of r, G has
logarithmic terms of weight ``1 - Ξ`` at r = 0 and ``Ξ`` at μ = 0, with
``Ξ = a ξ_x + (1-a) ξ_y``, ``ξ_x = d log X / d log(4 a r μ)``; the root-find
(:func:`convexlayers.cones._common.safeguarded_newton`) takes Newton steps in the
log of the distance (r or μ) to the end it moves towards
(:func:`convexlayers.cones._common.log_model_step`) from s = 0, typically five to
eight. s is kept in [-700, 700], beyond which r or μ is indistinguishable from 0.
As in the exponential cone, the candidate is replaced by one of the
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
    NOISE_TOL,
    PLUS_MINUS,
    as_cone_stack,
    boundary_jacobian,
    log_model_step,
    log_share,
    pick_candidate,
    row_scale,
    safe_log,
    safeguarded_newton,
)

_INSIDE, _POLAR, _FACE, _ROOT, _ROOT_ZERO, _ROOT_FACE = range(6)
_ROOT_CODES = np.array([_ROOT, _ROOT_ZERO, _ROOT_FACE])
_FACE_HI = np.array([np.inf, np.inf, 0.0])
_S_MAX = 700.0  # σ(-700) ≈ 1e-304: r or μ below that is indistinguishable from 0
_LOG2 = float(np.log(2.0))
_TINY = 1e-300


class _PowState(NamedTuple):
    u: np.ndarray  # (N, 3) scaled input
    proj: np.ndarray  # (N, 3) projection of the scaled input
    region: np.ndarray  # (N,) region codes
    logs: np.ndarray  # (4, N) log r = log |z_p|, log μ, log X, log Y (region _ROOT)


def _as_alpha(alpha, n: int) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float64)
    if a.ndim > 1 or (a.ndim == 1 and a.shape[0] != n):
        raise ValueError(f"`alpha` must be a scalar or have shape ({n},), got shape {a.shape}.")
    a = np.broadcast_to(a, (n,))
    if not ((a > 0) & (a < 1)).all():
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


def _power_coef(x, y, absz, a) -> tuple:
    """Per-cone constants: weights (a, 1-a), their log(4 ·), 2 log|(x0, y0)|,
    log|(x0, y0)|, [(x0, y0) > 0] (rows) and log|z0|."""
    weights, xy = np.array([a, 1.0 - a]), np.array([x, y])
    with np.errstate(divide="ignore"):
        log_abs = np.log(np.abs(xy))
    return weights, np.log(4.0 * weights), 2.0 * log_abs, log_abs, xy > 0, np.log(absz)


def _log_xy(log_q: np.ndarray, coef: tuple) -> tuple[np.ndarray, np.ndarray]:
    """log X, log Y and log ξ_x, log ξ_y (rows) from log q = log(4 (a, 1-a) r μ).

    With ``S = sqrt(x0² + q)`` and ``T = S + |x0|``: ``X = T/2`` for x0 > 0 and
    ``q / (2T)`` otherwise, and ``ξ = d log X / d log q = q / (2 S T)`` for x0 > 0
    and ``T / (2S)`` otherwise, all formed from logarithms.
    """
    _, _, two_log_abs, log_abs, pos, _ = coef
    log_s = 0.5 * np.logaddexp(two_log_abs, log_q)
    log_t = np.logaddexp(log_s, log_abs)
    rest = log_q - log_t
    log_xy = np.where(pos, log_t, rest) - _LOG2
    log_xi = np.where(pos, rest, log_t) - (log_s + _LOG2)
    return log_xy, log_xi


def _split_logs(s: np.ndarray, log_absz: np.ndarray) -> np.ndarray:
    """(log r, log μ) rows for r = |z| σ(s), μ = |z| σ(-s)."""
    return log_absz - np.logaddexp(0.0, -PLUS_MINUS * s)


def _power_newton(s: np.ndarray, coef: tuple):
    """G(s), the next iterate and the rounding error of G, for the root-find.

    ``dG/ds = (1 - Ξ) σ(-s) + Ξ σ(s)``. Towards r = 0 (G > 0) the distance is r
    with log weight 1 - Ξ, towards μ = 0 it is μ with weight Ξ; the new s follows
    from the new r (or μ) with r + μ = |z| fixed.
    """
    weights, log_4w, _, _, _, log_z = coef
    log_rm = _split_logs(s, log_z)
    sig_s, sig_ms = np.exp(log_rm - log_z)  # σ(s), σ(-s)
    log_xy, log_xi = _log_xy(log_4w + (log_rm[0] + log_rm[1]), coef)
    t_x, t_y = weights * log_xy
    f = log_rm[0] - t_x - t_y
    xi_x, xi_y = weights * np.exp(log_xi)
    big_xi = xi_x + xi_y
    slope = sig_ms + big_xi * (sig_s - sig_ms)
    left = f > 0
    weight = np.maximum(np.where(left, 1.0 - big_xi, big_xi), _TINY)
    q = log_model_step(np.abs(f), slope / np.where(left, sig_ms, sig_s), weight)
    ratio = np.exp(np.where(left, s, -s))  # r/μ or μ/r
    delta = q - np.log1p(-ratio * np.expm1(q))
    cand = np.minimum(np.maximum(s + np.where(left, delta, -delta), -_S_MAX), _S_MAX)
    return f, cand, (1.0 + np.abs(log_rm[0]) + np.abs(t_x) + np.abs(t_y)) * NOISE_TOL


def _power_root(coef: tuple) -> np.ndarray:
    """The parameter s of the root of Φ, r = |z0| σ(s)."""
    n = coef[-1].size
    lo, hi = np.full(n, -_S_MAX - 1.0), np.full(n, _S_MAX + 1.0)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        return safeguarded_newton(_power_newton, coef, lo, hi, np.zeros(n))


def _classify(u: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Region codes _INSIDE, _POLAR, _FACE (z0 = 0) or _ROOT of scaled, finite points."""
    x, y, z = u.T
    absz, b = np.abs(z), 1.0 - a
    inside = (x >= 0) & (y >= 0)
    inside &= np.power(np.maximum(x, 0.0), a) * np.power(np.maximum(y, 0.0), b) >= absz
    polar = (x <= 0) & (y <= 0)
    polar &= np.power(np.maximum(-x, 0.0) / a, a) * np.power(np.maximum(-y, 0.0) / b, b) >= absz
    rest = np.where(z == 0, _FACE, _ROOT)
    return np.where(inside, _INSIDE, np.where(polar, _POLAR, rest))


def _power_solve(v: np.ndarray, a: np.ndarray, jacobian: bool) -> tuple[np.ndarray, _PowState]:
    """Project rows of v onto K_a; also return what the Jacobian needs (if asked)."""
    scale, u, bad, zero = row_scale(v)
    region = _classify(u, a)
    region[bad | zero] = _POLAR
    face_pt = np.minimum(np.maximum(u, 0.0), _FACE_HI)  # (x0⁺, y0⁺, 0)
    code = region[:, None]
    proj = np.where(code == _INSIDE, u, np.where(code == _FACE, face_pt, 0.0))
    logs = np.zeros((4, u.shape[0]))
    idx = np.flatnonzero(region == _ROOT)
    if idx.size:
        ur = u[idx]
        absz = np.abs(ur[:, 2])
        coef = _power_coef(ur[:, 0], ur[:, 1], absz, a[idx])
        s_root = _power_root(coef)
        r, mu = _logistic_split(s_root, absz)
        x_p, y_p = _half_root(ur.T[:2], coef[0] * (4.0 * r * mu))
        p = np.array([x_p, y_p, np.copysign(r, ur[:, 2])]).T
        choice, proj[idx] = pick_candidate(p, face_pt[idx], ur)
        region[idx] = _ROOT_CODES[choice]
        if jacobian:
            log_rm = _split_logs(s_root, coef[-1])
            logs[:2, idx] = log_rm
            logs[2:, idx] = _log_xy(coef[1] + (log_rm[0] + log_rm[1]), coef)[0]
    proj[bad] = np.nan
    return proj * scale[:, None], _PowState(u, proj, region, logs)


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
    return _power_solve(v, _as_alpha(alpha, v.shape[0]), jacobian=False)[0]


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
    e1 = np.array([ey / hn, -ex / hn])
    g1 = (1.0 - a) * ex * ex - a * ey * ey
    log_h = top + np.log(hn)
    g_log = np.array(
        [
            2.0 * top + safe_log(np.abs(g1)),
            log_x + log_y,
            log_h + (1.0 - a) * log_x + a * log_y,
        ]
    )
    g_sign = np.array([np.sign(g1), -np.ones_like(g1), sz])
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
    _, state = _power_solve(v, a, jacobian=True)
    u, proj, region = state.u, state.proj, state.region
    inside = region == _INSIDE
    face = (region == _FACE) | (region == _ROOT_FACE)
    diag = np.array(
        [
            inside | (face & (proj[:, 0] > 0)),
            inside | (face & (proj[:, 1] > 0)),
            np.where(inside, 1.0, np.where(face, _face_zz(u[:, 0], u[:, 1], a), 0.0)),
        ]
    ).T
    jac = diag[:, :, None] * np.eye(3)
    root = np.flatnonzero(region == _ROOT)
    if root.size:
        log_r, log_mu, log_x, log_y = state.logs[:, root]
        jac[root] = _power_root_jacobian(  # z0 != 0
            np.sign(u[root, 2]), log_r, log_mu, log_x, log_y, a[root]
        )
    jac[~np.isfinite(proj[:, 0])] = np.nan
    return jac
