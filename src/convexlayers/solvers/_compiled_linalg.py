"""The dense linear algebra of the compiled interior-point method (:mod:`._ipm_compiled`):
products, Cholesky factorizations and triangular solves by loops, and the reduced KKT
system's factorization and refined solves. At the sizes this path takes (at most 200
unknowns) a BLAS or LAPACK call costs more than its arithmetic, and nothing here
allocates: callers pass the buffers.
"""

from __future__ import annotations

import numpy as np

from convexlayers.solvers._reduced import _EXACT, _ONE_STEP, _REFINE

try:  # the optional ``numba`` extra
    from numba import njit as _njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised where numba is absent
    HAVE_NUMBA = False


def _identity(fn):
    return fn


# Compiled lazily on first call and cached on disk; without Numba the functions stay
# plain Python and are never called (``available`` is False). Reassociation lets LLVM
# vectorize the inner products (1.33-1.48x at 50 variables and on an LP, measured); the
# flags keep NaN and infinity meaningful, which the stopping rules test. The order of
# the sums is then the compiler's: a fresh compile and the cached one may round apart.
jit = (_njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
       if HAVE_NUMBA else _identity)

# Scratch vectors per element (rows of three work arrays, of n, z and l entries): the
# kernel allocates nothing per iteration (at 10 variables, allocations were most of its
# time).
SCRATCH_N, SCRATCH_Z, SCRATCH_L = 6, 4, 10


@jit
def mv(out, A, x):
    """out = A x by loops (at these sizes a BLAS call costs more than its arithmetic)."""
    for i in range(A.shape[0]):
        acc = 0.0
        for j in range(A.shape[1]):
            acc += A[i, j] * x[j]
        out[i] = acc


@jit
def rmv_add(out, A, y, c):
    """out += c Aᵀ y by loops."""
    for i in range(A.shape[0]):
        yi = c * y[i]
        if yi != 0.0:
            for j in range(A.shape[1]):
                out[j] += A[i, j] * yi


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
def lower_solve(L, y):
    """y ← L⁻¹ y for lower-triangular L."""
    for i in range(L.shape[0]):
        acc = y[i]
        for k in range(i):
            acc -= L[i, k] * y[k]
        y[i] = acc / L[i, i]


@jit
def upper_solve(L, y):
    """y ← L⁻ᵀ y for lower-triangular L."""
    for i in range(L.shape[0] - 1, -1, -1):
        yi = y[i] / L[i, i]
        y[i] = yi
        for k in range(i):
            y[k] -= L[i, k] * yi


@jit
def factor(base, Az, Al, wts, rho, H, X, Ls):
    """Factor the reduced matrix with weights ``wts`` = y_l/s into (H, X, Ls); False if
    it is not definite: H = base + A_lᵀ diag(wts) A_l + ρI = L Lᵀ (L in H),
    X = (L⁻¹A_zᵀ)ᵀ and A_z H⁻¹ A_zᵀ + ρI = X Xᵀ + ρI = Ls Lsᵀ,
    base = P + γ A_zᵀA_z (see :func:`element`)."""
    n = Al.shape[1]
    H[:, :] = base
    for r in range(Al.shape[0]):
        w = wts[r]
        for i in range(n):
            a = w * Al[r, i]
            if a != 0.0:
                for j in range(i + 1):
                    H[i, j] += a * Al[r, j]
    for i in range(n):
        H[i, i] += rho
    if not cholesky(H):
        return False
    for c in range(Az.shape[0]):
        X[c, :] = Az[c]
        lower_solve(H, X[c])
    for i in range(Az.shape[0]):
        for j in range(i + 1):
            Ls[i, j] = dot(X[i], X[j])
        Ls[i, i] += rho
    return cholesky(Ls)


@jit
def solve(L, X, Ls, r1, r2, dx, dy):
    """(dx, dy) = K⁻¹ (r1, r2) by the factors (see the module)."""
    dx[:] = r1
    lower_solve(L, dx)
    if r2.shape[0]:
        mv(dy, X, dx)
        dy -= r2
        lower_solve(Ls, dy)
        upper_solve(Ls, dy)
        rmv_add(dx, X, dy, -1.0)
    upper_solve(L, dx)


@jit
def apply(P, has_p, Az, Al, wts, vx, vy, t1, t2, tl):
    """(t1, t2) = the unregularized K (vx, vy) (tl: scratch of l entries)."""
    mv(tl, Al, vx)
    tl *= wts
    t1[:] = 0.0
    rmv_add(t1, Al, tl, 1.0)
    rmv_add(t1, Az, vy, 1.0)
    if has_p:
        for i in range(P.shape[0]):
            t1[i] += dot(P[i], vx)
    mv(t2, Az, vx)


@jit
def refined(P, has_p, Az, Al, wts, fac, r1, r2, dx, dy, S):
    """(dx, dy) = K⁻¹ (r1, r2) with up to ``_REFINE`` refinement steps against K; the
    factors solve (r1 + γ A_zᵀ r2, r2) (see :mod:`._reduced`). Uses rows 0–2 of Sn,
    0–1 of Sz and 0 of Sl of the scratch S = (Sn, Sz, Sl)."""
    L, X, Ls, gamma = fac
    Sn, Sz, Sl = S
    rhs, e1, cx, e2, cy = Sn[0], Sn[1], Sn[2], Sz[0], Sz[1]
    rhs[:] = r1
    rmv_add(rhs, Az, r2, gamma)
    solve(L, X, Ls, rhs, r2, dx, dy)
    scale = max(amax(r1), amax(r2))
    for _ in range(_REFINE):
        apply(P, has_p, Az, Al, wts, dx, dy, e1, e2, Sl[0])
        for i in range(e1.shape[0]):
            e1[i] = r1[i] - e1[i]
        for i in range(e2.shape[0]):
            e2[i] = r2[i] - e2[i]
        size = max(amax(e1), amax(e2))
        if size <= _EXACT * scale:
            break
        rhs[:] = e1
        rmv_add(rhs, Az, e2, gamma)
        solve(L, X, Ls, rhs, e2, cx, cy)
        dx += cx
        dy += cy
        if size <= _ONE_STEP * scale:
            break


@jit
def step(v, dv):
    """The largest α ≤ 1 with v + α dv ≥ 0."""
    alpha = 1.0
    for i in range(v.shape[0]):
        if dv[i] < 0.0:
            alpha = min(alpha, -v[i] / dv[i])
    return alpha
