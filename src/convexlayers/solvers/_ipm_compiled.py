"""The interior-point method of :mod:`._ipm` compiled by Numba, for LPs and QPs.

The array program of :mod:`._ipm` pays a few hundred NumPy calls per iteration whatever
the size: at 10 variables and a batch of 32 that is about 1 ms an iteration, nearly all
of it call overhead. With Numba installed (the ``numba`` extra), programs whose cones are
zero and nonnegative only go through this module instead: the same method (CVXOPT's
starting point, Mehrotra's predictor-corrector in the Nesterov–Todd scaling, the same
stopping and stalling rules, regularization and refinement), one element at a time in
compiled code, with the reduced system

    [ P + A_lᵀ diag(y_l / s) A_l + ρI    A_zᵀ ] [dx  ]   [ r_x ]
    [ A_z                                −ρI  ] [dy_z] = [ r_z ]

factored as H = L Lᵀ and its Schur complement A_z H⁻¹ A_zᵀ + ρI = Ls Lsᵀ, by loops (at
these sizes a BLAS or LAPACK call costs more than its arithmetic). H carries γ A_zᵀA_z
wherever there are equalities (the right-hand side transformed to match, see
:mod:`._reduced`; dense here, it fills nothing). Without Numba, or
with other cones, :mod:`._ipm` runs; both give the same points to their tolerance. Set
``CONVEXLAYERS_COMPILED=0`` to turn this path off. Numba compiles the kernel on first
use, about 30 s once after installing, and caches it on disk.
"""

from __future__ import annotations

import os

import numpy as np

from convexlayers.solvers._ipm import (
    _GIVE_UP,
    _STALL,
    _STALL_BELOW,
    _STEP,
    _WARM_FLOOR,
    IPMResult,
    warm_rows,
)
from convexlayers.solvers._reduced import _EXACT, _ONE_STEP, _REFINE, _REG, BatchQP

try:  # the optional ``numba`` extra
    from numba import njit as _njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    HAVE_NUMBA = False

# Unknowns (n + equality rows) and batch × unknowns up to which this path runs: above
# them the batched BLAS products of :mod:`._ipm` win. Measured (dense QPs, forward and
# backward, one thread): 100 variables and 25 equalities, batch 1 1.7x faster here,
# batch 32 level, batch 128 1.05x slower; 50 and 12, batch 128 1.15x faster here.
MAX_SIZE, MAX_WORK = 128, 8192


def available() -> bool:
    """Whether the compiled path can run (Numba importable, not turned off)."""
    return HAVE_NUMBA and os.environ.get("CONVEXLAYERS_COMPILED", "1") != "0"


def fits(size: int, batch: int) -> bool:
    """Whether a batch of reduced systems of ``size`` unknowns is within this path's
    sizes (``MAX_SIZE``, ``MAX_WORK``), Numba present."""
    return available() and size <= MAX_SIZE and batch * size <= MAX_WORK


def applies(qp: BatchQP) -> bool:
    """Whether ``qp`` goes through this module: cones zero and nonnegative only, and
    :func:`fits`."""
    B, n = qp.q.shape
    return not qp.cone.soc and not qp.cone.psd and fits(n + qp.Az.shape[1], B)


def solve_orthant_batch(qp: BatchQP, tol: float, max_iter: int,
                        warm: tuple[np.ndarray, ...] | None) -> IPMResult:
    """:func:`._ipm.solve_qp_batch` for a batch that :func:`applies`."""
    B, n = qp.q.shape
    c = np.ascontiguousarray
    P = np.zeros((1, n, n)) if qp.P is None else c(qp.P)
    if warm is None:
        wx, wz, wl, ws = (np.zeros((1, k)) for k in (n, qp.Az.shape[1], qp.Al.shape[1],
                                                     qp.Al.shape[1]))
        mask = np.zeros(B, dtype=np.bool_)
    else:
        wx, wz, wl, ws = (c(w, dtype=np.float64) for w in warm)
        mask = warm_rows(warm)
    assert qp.scale is not None
    return IPMResult(*_batch(P, qp.P is not None, c(qp.q), c(qp.Az), c(qp.bz), c(qp.Al),
                             c(qp.bl), c(qp.scale), float(tol), int(max_iter), wx, wz, wl,
                             ws, mask))


def _identity(fn):
    return fn


# Compiled lazily on first call and cached on disk; without Numba the functions stay
# plain Python and are never called (``available`` is False).
jit = _njit(cache=True, nogil=True) if HAVE_NUMBA else _identity


@jit
def mv(A, x):
    """A x by loops (at these sizes a BLAS call costs more than its arithmetic)."""
    out = np.zeros(A.shape[0])
    for i in range(A.shape[0]):
        acc = 0.0
        for j in range(A.shape[1]):
            acc += A[i, j] * x[j]
        out[i] = acc
    return out


@jit
def rmv(A, y):
    """Aᵀ y by loops."""
    out = np.zeros(A.shape[1])
    for i in range(A.shape[0]):
        yi = y[i]
        if yi != 0.0:
            for j in range(A.shape[1]):
                out[j] += A[i, j] * yi
    return out


@jit
def dot(a, b):
    acc = 0.0
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@jit
def amax(v):
    out = 0.0
    for i in range(v.shape[0]):
        out = max(out, abs(v[i]))
    return out


@jit
def cholesky(H):
    """H = L Lᵀ in place (lower triangle; the upper one is left as it was); False if H
    is not numerically definite (or not finite)."""
    n = H.shape[0]
    for j in range(n):
        d = H[j, j]
        for k in range(j):
            d -= H[j, k] * H[j, k]
        if not d > 0.0 or not np.isfinite(d):
            return False
        d = np.sqrt(d)
        H[j, j] = d
        for i in range(j + 1, n):
            acc = H[i, j]
            for k in range(j):
                acc -= H[i, k] * H[j, k]
            H[i, j] = acc / d
    return True


@jit
def lower_solve(L, b):
    """L⁻¹ b for lower-triangular L."""
    y = b.copy()
    for i in range(L.shape[0]):
        acc = y[i]
        for k in range(i):
            acc -= L[i, k] * y[k]
        y[i] = acc / L[i, i]
    return y


@jit
def upper_solve(L, b):
    """L⁻ᵀ b for lower-triangular L."""
    y = b.copy()
    for i in range(L.shape[0] - 1, -1, -1):
        yi = y[i] / L[i, i]
        y[i] = yi
        for k in range(i):
            y[k] -= L[i, k] * yi
    return y


@jit
def factor(base, Az, Al, wts, rho):
    """(L, X = (L⁻¹A_zᵀ)ᵀ, Ls, ok) of the reduced matrix with weights ``wts`` = y_l/s:
    H = base + A_lᵀ diag(wts) A_l + ρI = L Lᵀ and A_z H⁻¹ A_zᵀ + ρI = X Xᵀ + ρI = Ls Lsᵀ,
    base = P + γ A_zᵀA_z (see :func:`element`)."""
    n, z = Al.shape[1], Az.shape[0]
    H = base.copy()
    for r in range(Al.shape[0]):
        w = wts[r]
        for i in range(n):
            a = w * Al[r, i]
            if a != 0.0:
                for j in range(i + 1):
                    H[i, j] += a * Al[r, j]
    for i in range(n):
        H[i, i] += rho
    X = np.zeros((z, n))
    Ls = np.zeros((z, z))
    if not cholesky(H):
        return H, X, Ls, False
    for c in range(z):
        X[c] = lower_solve(H, Az[c])
    for i in range(z):
        for j in range(i + 1):
            Ls[i, j] = dot(X[i], X[j])
        Ls[i, i] += rho
    return H, X, Ls, cholesky(Ls)


@jit
def solve(L, X, Ls, r1, r2):
    """K⁻¹ (r1, r2) by the factors (see the module)."""
    w = lower_solve(L, r1)
    dy = np.zeros(r2.shape[0])
    if r2.shape[0]:
        dy = upper_solve(Ls, lower_solve(Ls, mv(X, w) - r2))
        w = w - rmv(X, dy)
    return upper_solve(L, w), dy


@jit
def apply(P, has_p, Az, Al, wts, vx, vy):
    """The unregularized K (vx, vy)."""
    top = rmv(Al, wts * mv(Al, vx)) + rmv(Az, vy)
    if has_p:
        top += mv(P, vx)
    return top, mv(Az, vx)


@jit
def refined(P, has_p, Az, Al, wts, fac, r1, r2):
    """K⁻¹ (r1, r2) with up to ``_REFINE`` refinement steps against K; the factors solve
    (r1 + γ A_zᵀ r2, r2) (see :mod:`._reduced`)."""
    L, X, Ls, gamma = fac
    dx, dy = solve(L, X, Ls, r1 + gamma * rmv(Az, r2), r2)
    scale = max(amax(r1), amax(r2))
    for _ in range(_REFINE):
        t1, t2 = apply(P, has_p, Az, Al, wts, dx, dy)
        e1, e2 = r1 - t1, r2 - t2
        size = max(amax(e1), amax(e2))
        if size <= _EXACT * scale:
            break
        cx, cy = solve(L, X, Ls, e1 + gamma * rmv(Az, e2), e2)
        dx += cx
        dy += cy
        if size <= _ONE_STEP * scale:
            break
    return dx, dy


@jit
def error(P, has_p, q, Az, bz, Al, bl, x, yz, yl, s):
    """The element's error and residuals (r_x, r_z, r_l), as in :mod:`._ipm`."""
    r_x = q + rmv(Az, yz) + rmv(Al, yl)
    pobj = dot(q, x)
    if has_p:
        Px = mv(P, x)
        r_x += Px
        pobj += 0.5 * dot(x, Px)
    r_z, r_l = mv(Az, x) - bz, mv(Al, x) + s - bl
    dual = np.sqrt(dot(r_x, r_x)) / (1.0 + np.sqrt(dot(q, q)))
    primal = np.sqrt(dot(r_z, r_z) + dot(r_l, r_l)) / (
        1.0 + np.sqrt(dot(bz, bz)) + np.sqrt(dot(bl, bl)))
    gap = dot(s, yl) / (1.0 + abs(pobj))
    err = max(dual, primal, gap)
    return (err if np.isfinite(err) else np.inf), r_x, r_z, r_l


@jit
def step(v, dv):
    """The largest α ≤ 1 with v + α dv ≥ 0."""
    alpha = 1.0
    for i in range(v.shape[0]):
        if dv[i] < 0.0:
            alpha = min(alpha, -v[i] / dv[i])
    return alpha


@jit
def direction(P, has_p, Az, Al, wts, fac, d, lam, r_x, r_z, r_l, r_s):
    """The Newton direction (dx, dy_z, dy_l, ds) for complementarity target r_s."""
    t = -r_s / lam
    u = r_l * wts + t / d
    dx, dyz = refined(P, has_p, Az, Al, wts, fac, -r_x - rmv(Al, u), -r_z)
    g = mv(Al, dx)
    return dx, dyz, g * wts + u, -r_l - g


@jit
def iterate(P, has_p, Az, Al, reg, x, yz, yl, s, r_x, r_z, r_l):
    """One predictor-corrector step (in place); False if the factorization failed.
    ``reg``: (ρ, γ, P + γ A_zᵀA_z)."""
    rho, gamma, base = reg
    deg = max(yl.shape[0], 1)
    mu = dot(s, yl) / deg
    d, lam, wts = np.sqrt(s / yl), np.sqrt(s * yl), yl / s
    L, X, Ls, ok = factor(base, Az, Al, wts, rho)
    if not ok:
        return False
    fac = (L, X, Ls, gamma)
    _, _, dyl, ds = direction(P, has_p, Az, Al, wts, fac, d, lam, r_x, r_z, r_l,
                              lam * lam)
    alpha = min(step(s, ds), step(yl, dyl))
    mu_aff = dot(s + alpha * ds, yl + alpha * dyl) / deg
    sigma = (mu_aff / max(mu, 2.2250738585072014e-308)) ** 3
    r_s = lam * lam + ds * dyl - sigma * mu
    dx, dyz, dyl, ds = direction(P, has_p, Az, Al, wts, fac, d, lam, r_x, r_z, r_l, r_s)
    a = _STEP * min(step(s, ds), step(yl, dyl))
    x += a * dx
    yz += a * dyz
    yl += a * dyl
    s += a * ds
    return True


@jit
def start(P, has_p, q, Az, bz, Al, bl, reg):
    """CVXOPT's starting point (W = I), moved inside the orthant."""
    rho, gamma, base = reg
    ones = np.ones(Al.shape[0])
    L, X, Ls, ok = factor(base, Az, Al, ones, rho)
    n, z = Al.shape[1], Az.shape[0]
    if not ok:
        return np.zeros(n), np.zeros(z), ones.copy(), ones.copy()
    x, yz = refined(P, has_p, Az, Al, ones, (L, X, Ls, gamma), -q + rmv(Al, bl), bz)
    s = bl - mv(Al, x)
    yl = -s
    if s.size:
        s += max(0.0, -s.min()) + 1.0
        yl += max(0.0, -yl.min()) + 1.0
    return x, yz, yl, s


@jit
def raised(v):
    """v with its entries raised to ``_WARM_FLOOR`` times its scale."""
    floor = _WARM_FLOOR * (1.0 + (np.abs(v).max() if v.size else 0.0))
    return np.maximum(v, floor)


@jit
def element(P, has_p, q, Az, bz, Al, bl, rho, gamma, tol, max_iter, warm, wx, wz, wl, ws):
    """Solve one element (from the warm point (wx, wz, wl, ws) if ``warm``): its best
    point, error and iterations."""
    base = P.copy() if has_p else np.zeros((q.shape[0], q.shape[0]))
    for c in range(Az.shape[0]):
        for i in range(q.shape[0]):
            a = gamma * Az[c, i]
            if a != 0.0:
                for j in range(i + 1):
                    base[i, j] += a * Az[c, j]
    reg = (rho, gamma, base)
    if warm:
        x, yz, yl, s = wx.copy(), wz.copy(), raised(wl), raised(ws)
    else:
        x, yz, yl, s = start(P, has_p, q, Az, bz, Al, bl, reg)
    best = (x.copy(), yz.copy(), yl.copy(), s.copy())
    best_err, stalled, its = np.inf, 0, 0
    for it in range(max_iter + 1):
        err, r_x, r_z, r_l = error(P, has_p, q, Az, bz, Al, bl, x, yz, yl, s)
        if err < best_err:
            best = (x.copy(), yz.copy(), yl.copy(), s.copy())
        near = best_err <= _STALL_BELOW
        stalled = 0 if err < 0.5 * best_err else stalled + 1
        if near and err > 100.0 * best_err:
            stalled += _STALL
        best_err = min(best_err, err)
        limit = _STALL if near else _GIVE_UP
        if not (err > tol and stalled < limit and np.isfinite(err)) or it == max_iter:
            break
        if not iterate(P, has_p, Az, Al, reg, x, yz, yl, s, r_x, r_z, r_l):
            break
        its += 1
    return best, best_err, its


@jit
def _batch(P, has_p, q, Az, bz, Al, bl, scale, tol, max_iter, wx, wz, wl, ws, mask):
    B, n = q.shape
    z, m = Az.shape[1], Al.shape[1]
    x, yz = np.empty((B, n)), np.empty((B, z))
    yl, s = np.empty((B, m)), np.empty((B, m))
    err, its = np.empty(B), np.zeros(B, dtype=np.int64)
    for b in range(B):
        Pb = P[b] if has_p else P[0]
        w = b if mask[b] else 0  # no warm point: row 0 is passed, and not read
        best, err[b], its[b] = element(Pb, has_p, q[b], Az[b], bz[b], Al[b], bl[b],
                                       _REG * scale[b], 1.0 / scale[b], tol, max_iter,
                                       mask[b], wx[w], wz[w], wl[w], ws[w])
        x[b], yz[b], yl[b], s[b] = best
    return x, yz, yl, s, err, its


def warm_up() -> None:
    """Compile the kernel now (about 30 s the first time after installing; later
    processes load it from Numba's cache in well under a second)."""
    from convexlayers.solvers._cone_ops import Cones

    if not available():
        return
    eye = np.eye(2)[None]
    qp = BatchQP(eye, np.ones((1, 2)), np.ones((1, 1, 2)), np.ones((1, 1)), -eye,
                 np.zeros((1, 2)), Cones(2))
    solve_orthant_batch(qp, 1e-9, 50, None)
