"""Small helpers shared by the per-cone projection modules.

Nothing here is public. The per-cone functions all work on a stack of N cones
of the same kind, an array of shape ``(N, k)``, and return arrays of shape
``(N, k)`` (projections) or ``(N, k, k)`` (Jacobians).
"""

from __future__ import annotations

import numpy as np

EPS = float(np.finfo(np.float64).eps)
_DIAG3 = (np.arange(3), np.arange(3))


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

    i.e. ``D' = diag(d) - c cᵀ`` with ``c_i = s_i sqrt(d_i q_i / T)``. Rotated back
    with ``R = [e1, e1⊥, e_z]`` this is ``DΠ = I + (γ - 1) ê êᵀ - b bᵀ``, ê = (e1, 0),
    b = R c: exactly symmetric, and accurate to a few eps in absolute terms.
    The callers supply γ and ∇f in that basis from closed
    forms (products of a nearly parallel e1 and ∇f would cancel), and as logarithms:
    near the edges of the cones γ and the components of ∇f span hundreds of orders
    of magnitude, and only their ratios matter.

    Args:
        e1: (2, N) unit vectors in the (x, y) plane.
        log_gamma: (N,) log of the eigenvalue γ ∈ [0, 1] of M⁻¹ along e1.
        g_sign: (3, N) (or broadcastable) signs of the components of ∇f(p) in the
            basis (e1, e1⊥, e_z).
        g_log: (3, N) logs of their absolute values (-inf for zero), up to a common
            additive constant per column.

    Returns:
        (N, 3, 3) stack of Jacobians in the original coordinates.
    """
    log_q = 2.0 * g_log  # log q_i = log d_i + 2 log|g_i|, d = (γ, 1, 1)
    log_q[0] += log_gamma
    top = np.maximum(np.maximum(log_q[0], log_q[1]), log_q[2])
    log_q -= np.where(np.isfinite(top), top, 0.0)  # all q = 0: D' = diag(d)
    q = np.exp(log_q)
    total = q[0] + q[1] + q[2]
    log_q *= 0.5
    log_q[0] += 0.5 * log_gamma  # log sqrt(d_i q_i)
    amp = g_sign * np.exp(log_q) / np.sqrt(np.where(total > 0, total, 1.0))  # c
    cos, sin = e1
    b = np.array([amp[0] * cos - amp[1] * sin, amp[0] * sin + amp[1] * cos, amp[2]])
    e = np.array([cos, sin, np.zeros_like(cos)])
    jac = np.expm1(log_gamma) * (e[:, None] * e[None, :]) - b[:, None] * b[None, :]
    jac[_DIAG3] += 1.0
    return jac.transpose(2, 0, 1)


def pick_candidate(p: np.ndarray, face: np.ndarray, v: np.ndarray):
    """Keep the root-find's projection p unless a fallback is clearly closer to v.

    The fallbacks are the always-feasible points 0 and ``face``. Distances are
    compared through ``||v - c||² - ||v||² = <c, c - 2 v>``, and a fallback must
    win by more than the rounding error of that key, 16 eps ||v||². (Distances
    cannot see an error e tangent to the boundary below ||e|| ~ sqrt(eps) ||v||, so
    without the margin a correct tiny projection could lose a tie against the
    fallback 0.) The fallbacks thus only catch gross failures: a non-finite or
    far-off root.

    Args:
        p: (N, d) projections computed by the root-find.
        face: (N, d) the second fallback.
        v: (N, d) points being projected.

    Returns:
        ``(choice, point)``: choice (N,) 0 for p, 1 for the fallback 0, 2 for face
        (ties go to the earlier), and the (N, d) chosen points.
    """
    two_v = v + v
    key_p = (p * (p - two_v)).sum(axis=1)
    key_face = (face * (face - two_v)).sum(axis=1)
    keep = key_p <= np.minimum(key_face, 0.0) + (v * v).sum(axis=1) * (16.0 * EPS)  # NaN: False
    face_wins = key_face < 0
    choice = np.where(keep, 0, 1 + face_wins)
    return choice, np.where(keep[:, None], p, np.where(face_wins[:, None], face, 0.0))


def row_scale(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split each row of v into a scale and a unit-max-norm direction.

    Both the exponential and the power cone are cones, so Π(c v) = c Π(v) and
    DΠ(c v) = DΠ(v) for c > 0. Working on ``v / max|v_i|`` keeps every
    intermediate of the scalar root-finds in a safe floating-point range.

    Args:
        v: (N, d) array.

    Returns:
        ``(scale, u, bad, zero)``: scale (N,) the max-abs of each row (1 where the
        row is zero or not finite), u (N, d) the scaled rows (zero for bad rows),
        bad (N,) a mask of rows containing NaN or Inf and zero (N,) a mask of
        zero rows.
    """
    scale = np.abs(v).max(axis=1, initial=0.0)
    bad = ~np.isfinite(scale)
    zero = scale == 0
    good_scale = np.where(bad | zero, 1.0, scale)
    u = np.where(bad[:, None], 0.0, v) / good_scale[:, None]
    return good_scale, u, bad, zero


# Root-finding for the exponential and power cones.
PLUS_MINUS = np.array([[1.0], [-1.0]])
_NEWTON_ONLY = 12  # iterations before bisection steps are interleaved (guaranteed progress)
_MAX_ITER = 400
_COMPACT_MIN = 256  # working arrays at least this long are compacted as entries stop
_STEP_TOL = 4.0 * EPS  # relative to 1 + |t|
NOISE_TOL = 4.0 * EPS  # residuals below this times their rounding-error scale count as 0


def log_model_step(f_abs, slope, weight, refine: bool = True) -> np.ndarray:
    """Newton step towards the end of an interval where the residual may be logarithmic.

    Near an end of its interval the residuals of the cone root-finds behave like
    ``β log d + λ d`` in the distance d to that end (β = 0: smooth; β > 0: a
    singular logarithm, where plain Newton steps overshoot the end, and steps in
    log d fall short when λ d dominates). With ``P = |f'| d0`` at the current
    distance d0 and ``b = min(β, P)``, moving to ``d = d0 e^q`` changes the model
    by ``b q + (P - b)(e^q - 1)``; this returns q < 0 where that change equals
    -|f|: the upper bound ``min(-|f|/P, (P - b - |f|)/b)`` of the root, improved
    by one Newton step if ``refine`` (the change is increasing and convex in q,
    so the step stays above the root). For P >> 1 it is the plain Newton step,
    for P <= 1 Newton in log d.
    """
    b = np.minimum(weight, slope)
    lin = slope - b
    q = np.fmin(-f_abs / slope, (lin - f_abs) / b)
    if not refine:
        return q
    lin_em = lin * np.expm1(q)
    return q - (lin_em + b * q + f_abs) / (lin_em + slope)


def safeguarded_newton(fun, coef: tuple, lo: np.ndarray, hi: np.ndarray, t: np.ndarray):
    """Roots of increasing scalar functions, one per entry, vectorized.

    ``fun(t, coef)`` returns the residual f(t), a proposed next iterate (a model
    Newton step that stays inside the interval) and the size of the rounding
    error of f (``NOISE_TOL`` times its scale). An entry stops when its step falls
    below 4 eps (1 + |t|) or its residual below its rounding error, and is then
    frozen (and dropped from the working arrays when they are long). Entries still running
    after ``_NEWTON_ONLY`` steps continue in :func:`_bracketed_newton`.

    Args:
        fun: the residual and step function.
        coef: tuple of (..., N) per-entry coefficient arrays passed to ``fun``.
        lo, hi: (N,) bracket with f(lo) <= 0 <= f(hi) (the ends are not evaluated;
            where lo == hi, t is returned as is).
        t: (N,) starting points inside the bracket.

    Returns:
        (N,) roots.
    """
    out = t = t.copy()
    idx = np.arange(t.size)
    active = lo < hi  # else t is the root
    for _ in range(_NEWTON_ONLY):
        f, cand, noise = fun(t, coef)
        active &= ~(np.abs(f) <= noise)  # else t is final (NaN: go on)
        step = np.abs(cand - t)
        np.copyto(t, cand, where=active & (step < np.inf))
        active &= ~(step <= np.abs(t) * _STEP_TOL + _STEP_TOL)  # else cand is final
        n_active = np.count_nonzero(active)
        if n_active == 0 or (n_active <= t.size // 2 and t.size >= _COMPACT_MIN):
            if t is not out:
                out[idx] = t
            if n_active == 0:
                return out
            idx, t, coef = idx[active], t[active], tuple(c[..., active] for c in coef)
            active = np.ones(n_active, dtype=bool)
    if t is not out:
        out[idx] = t
    rest = idx[active]
    coef = tuple(c[..., active] for c in coef)
    out[rest] = _bracketed_newton(fun, coef, lo[rest], hi[rest], out[rest])
    return out


def _bracketed_newton(fun, coef: tuple, lo: np.ndarray, hi: np.ndarray, t: np.ndarray):
    """Continuation of :func:`safeguarded_newton` with guaranteed progress.

    Each iteration shrinks the bracket [lo, hi] to the sign of f and takes the
    proposal if it is a step below the tolerance or lies inside the bracket, else
    bisects it; every other iteration bisects, so the bracket at least halves
    every two iterations. Stopping rules as in :func:`safeguarded_newton`.
    """
    active = np.ones(t.size, dtype=bool)
    for it in range(_MAX_ITER):
        f, cand, noise = fun(t, coef)
        lo = np.where(f < 0, t, lo)
        hi = np.where(f > 0, t, hi)
        tol = np.abs(t) * _STEP_TOL + _STEP_TOL
        take = np.abs(cand - t) <= tol
        if it % 2 == 0:
            take |= (lo < cand) & (cand < hi)
        new = np.where(take, cand, 0.5 * (lo + hi))
        active &= ~(np.abs(f) <= noise)  # else t is final
        new = np.where(active, new, t)
        active &= np.abs(new - t) > tol  # else new is final
        t = new
        if not active.any():
            break
    return t
