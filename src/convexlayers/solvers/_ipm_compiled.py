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

from convexlayers.solvers._compiled_linalg import (
    HAVE_NUMBA,
    SCRATCH_L,
    SCRATCH_N,
    SCRATCH_Z,
    dot,
    factor,
    jit,
    mv,
    refined,
    rmv_add,
    step,
)
from convexlayers.solvers._ipm import (
    _GIVE_UP,
    _STALL,
    _STALL_BELOW,
    _STEP,
    _WARM_FLOOR,
    IPMResult,
    warm_rows,
)
from convexlayers.solvers._reduced import _REG, BatchQP

# Unknowns (n + equality rows) up to which this path runs: above it the batched LAPACK
# factorizations of :mod:`._ipm` win. Measured (dense QPs, forward and backward, one
# thread, against the array method): 125 unknowns at batch 32 and 128 1.28x and 1.34x
# faster here, 187 at batch 8 1.22x, 250 at batch 4 and 375 at batch 2 3-5% slower; 12
# unknowns at batch 1,024 1.34x faster (no batch size favours the array method).
MAX_SIZE = 200


def available() -> bool:
    """Whether the compiled path can run (Numba importable, not turned off)."""
    return HAVE_NUMBA and os.environ.get("CONVEXLAYERS_COMPILED", "1") != "0"


def fits(size: int) -> bool:
    """Whether reduced systems of ``size`` unknowns are within this path's sizes
    (``MAX_SIZE``), Numba present."""
    return available() and size <= MAX_SIZE


def applies(qp: BatchQP) -> bool:
    """Whether ``qp`` goes through this module: cones zero and nonnegative only, and
    :func:`fits`."""
    n = qp.q.shape[1]
    return not qp.cone.soc and not qp.cone.psd and fits(n + qp.Az.shape[1])


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


@jit
def error(P, has_p, q, Az, bz, Al, bl, x, yz, yl, s, r_x, r_z, r_l):
    """The element's error, as in :mod:`._ipm`; its residuals into (r_x, r_z, r_l)."""
    r_x[:] = q
    rmv_add(r_x, Az, yz, 1.0)
    rmv_add(r_x, Al, yl, 1.0)
    pobj = dot(q, x)
    if has_p:
        for i in range(P.shape[0]):
            pi = dot(P[i], x)
            r_x[i] += pi
            pobj += 0.5 * x[i] * pi
    mv(r_z, Az, x)
    r_z -= bz
    mv(r_l, Al, x)
    r_l += s - bl
    dual = np.sqrt(dot(r_x, r_x)) / (1.0 + np.sqrt(dot(q, q)))
    primal = np.sqrt(dot(r_z, r_z) + dot(r_l, r_l)) / (
        1.0 + np.sqrt(dot(bz, bz)) + np.sqrt(dot(bl, bl)))
    gap = dot(s, yl) / (1.0 + abs(pobj))
    err = max(dual, primal, gap)
    return err if np.isfinite(err) else np.inf


@jit
def direction(P, has_p, Az, Al, wts, fac, d, lam, res, r_s, out, S):
    """The Newton direction out = (dx, dy_z, dy_l, ds) for complementarity target r_s,
    residuals res = (r_x, r_z, r_l). Uses rows 0–3 of Sn, 0–2 of Sz, 0–2 of Sl."""
    r_x, r_z, r_l = res
    dx, dyz, dyl, ds = out
    Sn, Sz, Sl = S
    u, g, r1, r2 = Sl[1], Sl[2], Sn[3], Sz[2]
    for i in range(u.shape[0]):
        u[i] = r_l[i] * wts[i] - r_s[i] / (lam[i] * d[i])
    r1[:] = -r_x
    rmv_add(r1, Al, u, -1.0)
    r2[:] = -r_z
    refined(P, has_p, Az, Al, wts, fac, r1, r2, dx, dyz, S)
    mv(g, Al, dx)
    for i in range(g.shape[0]):
        dyl[i] = g[i] * wts[i] + u[i]
        ds[i] = -r_l[i] - g[i]


@jit
def iterate(P, has_p, Az, Al, reg, x, yz, yl, s, res, F, S):
    """One predictor-corrector step (in place); False if the factorization failed.
    ``reg``: (ρ, γ, P + γ A_zᵀA_z); F = (H, X, Ls): room for the factors; scratch S
    (row 4 of Sn, row 3 of Sz and rows 4–9 of Sl here)."""
    rho, gamma, base = reg
    H, X, Ls = F
    Sn, Sz, Sl = S
    d, lam, wts, r_s, dyl, ds = Sl[4], Sl[5], Sl[6], Sl[7], Sl[8], Sl[9]
    out = (Sn[4], Sz[3], dyl, ds)
    deg = max(yl.shape[0], 1)
    mu = dot(s, yl) / deg
    for i in range(s.shape[0]):
        d[i] = np.sqrt(s[i] / yl[i])
        lam[i] = np.sqrt(s[i] * yl[i])
        wts[i] = yl[i] / s[i]
        r_s[i] = lam[i] * lam[i]
    if not factor(base, Az, Al, wts, rho, H, X, Ls):
        return False
    fac = (H, X, Ls, gamma)
    direction(P, has_p, Az, Al, wts, fac, d, lam, res, r_s, out, S)
    alpha = min(step(s, ds), step(yl, dyl))
    mu_aff = 0.0
    for i in range(s.shape[0]):
        mu_aff += (s[i] + alpha * ds[i]) * (yl[i] + alpha * dyl[i])
    sigma = (mu_aff / deg / max(mu, 2.2250738585072014e-308)) ** 3
    for i in range(s.shape[0]):
        r_s[i] = lam[i] * lam[i] + ds[i] * dyl[i] - sigma * mu
    direction(P, has_p, Az, Al, wts, fac, d, lam, res, r_s, out, S)
    a = _STEP * min(step(s, ds), step(yl, dyl))
    x += a * out[0]
    yz += a * out[1]
    yl += a * dyl
    s += a * ds
    return True


@jit
def start(P, has_p, q, Az, bz, Al, bl, reg, F, S):
    """CVXOPT's starting point (W = I), moved inside the orthant (scratch: row 5 of Sn
    and :func:`refined`'s rows)."""
    rho, gamma, base = reg
    H, X, Ls = F
    n, z, m = Al.shape[1], Az.shape[0], Al.shape[0]
    ones = np.ones(m)
    x, yz = np.zeros(n), np.zeros(z)
    if not factor(base, Az, Al, ones, rho, H, X, Ls):
        return x, yz, ones.copy(), ones.copy()
    r1 = S[0][5]
    r1[:] = -q
    rmv_add(r1, Al, bl, 1.0)
    refined(P, has_p, Az, Al, ones, (H, X, Ls, gamma), r1, bz, x, yz, S)
    s = np.empty(m)
    mv(s, Al, x)
    s[:] = bl - s
    yl = -s
    if m:
        s += max(0.0, -s.min()) + 1.0
        yl += max(0.0, -yl.min()) + 1.0
    return x, yz, yl, s


@jit
def raised(v):
    """v with its entries raised to ``_WARM_FLOOR`` times its scale."""
    floor = _WARM_FLOOR * (1.0 + (np.abs(v).max() if v.size else 0.0))
    return np.maximum(v, floor)


@jit
def gram_base(P, has_p, Az, gamma, n):
    """P + γ A_zᵀA_z (lower triangle; zeros for P when there is none)."""
    base = P.copy() if has_p else np.zeros((n, n))
    for c in range(Az.shape[0]):
        for i in range(n):
            a = gamma * Az[c, i]
            if a != 0.0:
                for j in range(i + 1):
                    base[i, j] += a * Az[c, j]
    return base


@jit
def element(P, has_p, q, Az, bz, Al, bl, rho, gamma, tol, max_iter, warm, wx, wz, wl, ws,
            best):
    """Solve one element (from the warm point (wx, wz, wl, ws) if ``warm``): its best
    point into ``best`` = (x, y_z, y_l, s), its error and iterations."""
    n, z, m = q.shape[0], Az.shape[0], Al.shape[0]
    reg = (rho, gamma, gram_base(P, has_p, Az, gamma, n))
    F = (np.empty((n, n)), np.empty((z, n)), np.empty((z, z)))
    S = (np.empty((SCRATCH_N, n)), np.empty((SCRATCH_Z, z)), np.empty((SCRATCH_L, m)))
    res = (np.empty(n), np.empty(z), np.empty(m))
    if warm:
        x, yz, yl, s = wx.copy(), wz.copy(), raised(wl), raised(ws)
    else:
        x, yz, yl, s = start(P, has_p, q, Az, bz, Al, bl, reg, F, S)
    bx, byz, byl, bs = best
    bx[:], byz[:], byl[:], bs[:] = x, yz, yl, s
    best_err, stalled, its = np.inf, 0, 0
    for it in range(max_iter + 1):
        err = error(P, has_p, q, Az, bz, Al, bl, x, yz, yl, s, res[0], res[1], res[2])
        if err < best_err:
            bx[:], byz[:], byl[:], bs[:] = x, yz, yl, s
        near = best_err <= _STALL_BELOW
        stalled = 0 if err < 0.5 * best_err else stalled + 1
        if near and err > 100.0 * best_err:
            stalled += _STALL
        best_err = min(best_err, err)
        limit = _STALL if near else _GIVE_UP
        if not (err > tol and stalled < limit and np.isfinite(err)) or it == max_iter:
            break
        if not iterate(P, has_p, Az, Al, reg, x, yz, yl, s, res, F, S):
            break
        its += 1
    return best_err, its


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
        err[b], its[b] = element(Pb, has_p, q[b], Az[b], bz[b], Al[b], bl[b],
                                 _REG * scale[b], 1.0 / scale[b], tol, max_iter, mask[b],
                                 wx[w], wz[w], wl[w], ws[w], (x[b], yz[b], yl[b], s[b]))
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
