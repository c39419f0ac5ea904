"""Block elimination of a batch of quasi-definite matrices that share one sparsity pattern.

The reduced KKT matrix of the interior-point method, ``[[H, A_zᵀ], [A_z, -ρI]]``, is
mostly structure that CVXPY put there: an auxiliary variable ``t = L x`` of a
``sum_squares`` has a diagonal block of P and one equality row, the ``t`` of an ``abs``
or ``norm1`` couples only with its own inequality rows. Factoring the whole matrix
densely pays for all of it (a 50-variable QP becomes a 162-unknown system).

The analysis, done once per batch on the pattern alone, picks rounds of unknowns that
are mutually uncoupled (an independent set of the pattern's graph) and whose pivots are
safe: a primal unknown with a diagonal entry of P or an inequality row, or any unknown
whose diagonal an earlier round filled. A round's pivots form a diagonal block, so its
Schur complement is one batched product, ``E - C D⁻¹ Cᵀ``, on the round's neighbours
only. Rounds stop when the rest is dense; the rest is inverted densely (kept as the
inverse of its Cholesky factor where it is definite, see :class:`Inverse`).
Quasi-definite matrices admit an LDLᵀ factorization in any symmetric order (Vanderbei
1995), so eliminating without pivoting is sound; a pivot
that rounding pushed across zero is clamped to the regularization, and the caller's
iterative refinement against the unregularized matrix absorbs the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import lapack

# Below this size the rest is factored at once; rounds that remove fewer than this
# fraction of the remaining unknowns are not worth their Python overhead.
_DENSE_BELOW = 24
_MIN_FRACTION = 0.05
# Blocks up to this order are inverted by NumPy's batched LU (one call for the batch)
# rather than by a LAPACK Cholesky call per element, whose call overhead dominates there
# (at 5x5 and batch 128: 0.1 against 0.28 ms).
_LU_BELOW = 12
# A round takes unknowns of degree at most this multiple of the round's least degree
# (minimum-degree flavour: low-degree pivots create little fill).
_DEGREE_SLACK = 2


@dataclass(frozen=True)
class Plan:
    """Unknowns in elimination order: ``order`` (N,) permutes them so that each round
    is a contiguous block ``rounds[k] = (a, b)`` of positions, whose neighbours lie in
    the window ``windows[k] = (lo, hi)`` of later positions; positions ``rest`` onward
    are factored densely. With ``dense_last``, the last round's pivots form a dense block
    (the rest's safe unknowns, inverted as a block) rather than a diagonal one."""

    order: np.ndarray
    rounds: tuple[tuple[int, int], ...]
    windows: tuple[tuple[int, int], ...]
    rest: int
    dense_last: bool


def analyse(pattern: np.ndarray, safe: np.ndarray) -> Plan:
    """The elimination plan of a symmetric ``pattern`` (N, N) bool; ``safe`` (N,): the
    unknowns whose pivot may be taken before any elimination has filled it."""
    adj = pattern | pattern.T
    np.fill_diagonal(adj, False)
    safe = safe.copy()
    remaining = np.ones(adj.shape[0], dtype=bool)
    sets: list[tuple[np.ndarray, np.ndarray]] = []
    while remaining.sum() > _DENSE_BELOW:
        S = _independent(adj, remaining, safe)
        if S.size < max(2, _MIN_FRACTION * remaining.sum()):
            break
        remaining[S] = False
        R = np.flatnonzero(adj[S].any(axis=0) & remaining)
        sets.append((S, R))
        # Eliminating s joins its neighbours into a clique; their diagonals fill.
        sub = adj[np.ix_(R, S)].astype(np.int32)
        adj[np.ix_(R, R)] |= (sub @ sub.T) > 0
        np.fill_diagonal(adj, False)
        safe[R] = True
    rest = np.flatnonzero(remaining)
    head, tail = rest[safe[rest]], rest[~safe[rest]]
    dense = head.size > 0 and tail.size > 0
    if dense:  # one dense pivot block of the rest's safe unknowns, then its Schur complement
        sets.append((head, tail))
        rest = tail
    order = np.concatenate([S for S, _ in sets] + [rest])
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    rounds, windows, a = [], [], 0
    for S, R in sets:
        rounds.append((a, a + S.size))
        a += S.size
        windows.append((int(position[R].min()), int(position[R].max()) + 1) if R.size
                       else (a, a))
    return Plan(order, tuple(rounds), tuple(windows), a, dense)


def _independent(adj: np.ndarray, remaining: np.ndarray, safe: np.ndarray) -> np.ndarray:
    """A greedy independent set of safe remaining unknowns, least degree first."""
    cand = np.flatnonzero(remaining & safe)
    if not cand.size:
        return cand
    degree = adj[np.ix_(cand, np.flatnonzero(remaining))].sum(axis=1)
    limit = _DEGREE_SLACK * max(int(degree.min()), 1)
    blocked = np.zeros(adj.shape[0], dtype=bool)
    picked = []
    for i in cand[np.argsort(degree, kind="stable")][np.sort(degree) <= limit]:
        if not blocked[i]:
            picked.append(i)
            blocked |= adj[i]
            blocked[i] = True
    return np.array(sorted(picked), dtype=np.int64)


class Inverse:
    """The inverses of a batch of square blocks M (B, k, k): ``s·Tᵀ T`` with T (B, k, k)
    the inverse of the lower Cholesky factor of ``s·M`` where every element is definite
    with pivots of sign s, else formed (``full``). Applying the factor form costs two
    matrix-vector products, and it is 1.3-2x cheaper to compute than the formed inverse
    (LAPACK ``potri`` spends more on forming Tᵀ T than ``trtri`` on T)."""

    def __init__(self, tri: np.ndarray | None, sign: float, full: np.ndarray | None) -> None:
        self.tri, self.sign, self.full = tri, sign, full

    def apply(self, v: np.ndarray) -> np.ndarray:
        """M⁻¹ v for v (B, k)."""
        if self.tri is None:
            assert self.full is not None
            return (self.full @ v[..., None])[..., 0]
        u = (self.tri @ v[..., None])[..., 0]
        return self.sign * (u[:, None, :] @ self.tri)[:, 0]

    def right(self, C: np.ndarray) -> np.ndarray:
        """C M⁻¹ for C (B, r, k)."""
        if self.tri is None:
            return C @ self.full
        return self.sign * ((C @ np.swapaxes(self.tri, 1, 2)) @ self.tri)

    def dense(self) -> np.ndarray:
        """M⁻¹ formed (B, k, k)."""
        if self.tri is None:
            assert self.full is not None
            return self.full
        return self.sign * (np.swapaxes(self.tri, 1, 2) @ self.tri)


def invert(M: np.ndarray, signs: np.ndarray) -> Inverse:
    """The inverses of a batch of square blocks whose pivots have the ``signs``.

    A definite block (all signs equal, which the quasi-definite form gives a primal dense
    block and the dual rest) larger than ``_LU_BELOW`` is kept in factor form (LAPACK
    ``potrf``/``trtri``); an element that is not numerically definite makes the batch's
    inverses formed, that element's by LU; a block of mixed signs or a small one is
    inverted by LU. An element with non-finite entries (a diverging, infeasible element)
    gets the identity and a singular one its pseudo-inverse: both are caught by the
    caller's convergence test, and the rest of the batch is not lost to them."""
    bad = ~np.isfinite(M.sum(axis=(1, 2)))  # a NaN or ±inf entry (or an overflow)
    if bad.any():
        M = np.where(bad[:, None, None], np.eye(M.shape[1]), M)
    if M.shape[1] > _LU_BELOW and (signs == signs[0]).all():
        sign = float(signs[0])
        tri, ok = _cholesky_inverse_factor(np.multiply(M, sign, order="C"))  # a copy
        if ok.all():
            return Inverse(tri, sign, None)
        full = sign * (np.swapaxes(tri, 1, 2) @ tri)
        full[~ok] = _lu_inverse(M[~ok])
        return Inverse(None, 1.0, full)
    return Inverse(None, 1.0, _lu_inverse(M))


def _cholesky_inverse_factor(out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """T = L⁻¹ (B, k, k) lower, A = L Lᵀ, for symmetric positive definite blocks A,
    written over ``out`` (C-ordered, holding A), and which were definite."""
    ok = np.ones(out.shape[0], dtype=bool)
    for b in range(out.shape[0]):
        # In place on the Fortran view of a C-ordered block: the view's upper factor U
        # is Lᵀ, so the block's lower triangle holds L, then L⁻¹ (the view's U⁻¹).
        _, info = lapack.dpotrf(out[b].T, lower=0, overwrite_a=1, clean=0)
        if info == 0:
            _, info = lapack.dtrtri(out[b].T, lower=0, overwrite_c=1)
        ok[b] = info == 0
    out *= np.tri(out.shape[1])  # the upper triangle still holds A
    return out, ok


def _lu_inverse(M: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.inv(M)
    except np.linalg.LinAlgError:
        return np.stack([_pinv_if_singular(Mb) for Mb in M])


def _pinv_if_singular(M: np.ndarray) -> np.ndarray:
    try:
        return np.linalg.inv(M)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(M)


class Factorization:
    """The factors of a batch (B, N, N) of regularized quasi-definite matrices.

    Args:
        plan: from :func:`analyse` on a pattern containing every element's.
        K: the matrices (overwritten when ``plan.order`` is the identity).
        signs: (N,) +1 on primal unknowns, -1 on dual ones: the sign of each pivot.
        floor: (B,) the least pivot magnitude (the regularization).
    """

    def __init__(self, plan: Plan, K: np.ndarray, signs: np.ndarray,
                 floor: np.ndarray) -> None:
        p = plan.order
        # C-ordered (a fancy index K[:, p[:, None], p] would lay the batch axis innermost,
        # which every batched product and LAPACK call below would pay for).
        W = K if (p == np.arange(p.size)).all() else K.take(p, axis=1).take(p, axis=2)
        signs = signs[p]
        self.plan = plan
        self.steps: list[tuple[np.ndarray | Inverse, np.ndarray]] = []
        for k, ((a, b), (lo, hi)) in enumerate(zip(plan.rounds, plan.windows, strict=True)):
            C = W[:, lo:hi, a:b]
            d: np.ndarray | Inverse
            if plan.dense_last and k == len(plan.rounds) - 1:
                d = invert(W[:, a:b, a:b], signs[a:b])
                F = d.right(C)
            else:
                diag = np.diagonal(W[:, a:b, a:b], axis1=1, axis2=2)
                pivots = signs[a:b] * np.maximum(signs[a:b] * diag, floor[:, None])
                d, F = pivots, C / pivots[:, None, :]
            W[:, lo:hi, lo:hi] -= F @ np.swapaxes(C, 1, 2)
            self.steps.append((d, F))
        self.inv = invert(W[:, plan.rest:, plan.rest:], signs[plan.rest:])

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """K⁻¹ rhs for rhs (B, N), by the factors (no refinement)."""
        plan = self.plan
        f = rhs[:, plan.order]
        for (a, b), (lo, hi), (_, F) in zip(plan.rounds, plan.windows, self.steps,
                                            strict=True):
            f[:, lo:hi] -= (F @ f[:, a:b, None])[..., 0]
        x = np.zeros_like(f)
        r = plan.rest
        x[:, r:] = self.inv.apply(f[:, r:])
        for (a, b), (lo, hi), (d, F) in zip(reversed(plan.rounds), reversed(plan.windows),
                                            reversed(self.steps), strict=True):
            own = d.apply(f[:, a:b]) if isinstance(d, Inverse) else f[:, a:b] / d
            x[:, a:b] = own - (x[:, None, lo:hi] @ F)[:, 0]
        out = np.empty_like(x)
        out[:, plan.order] = x
        return out
