"""The reduced KKT system of the batched interior-point method, and the batch's data.

Every element of a batch shares one sparsity pattern, so what the iterations share is
computed once per solve (:class:`Layout`): the block-elimination plan of the reduced
matrix (:mod:`._elimination`) and, when the inequality rows are sparse, the pairs of
nonzeros that form ``A_lᵀ (WᵀW)⁻¹ A_l``. Each iteration then forms and factors

    [ P + A_lᵀ (WᵀW)⁻¹ A_l + ρI    A_zᵀ ]
    [ A_z                          −ρI  ]

for the whole batch (:class:`Reduced`), with W the Nesterov–Todd scaling of the cones
(:mod:`._cone_ops`): diagonal on the orthant, a dense block per second-order cone.

Where P is not definite and it fills no new entry (:func:`gram_fits`), the top left
block is factored with γ A_zᵀA_z added, and a right-hand side (r_x, r_z) is solved as
(r_x + γ A_zᵀ r_z, r_z): the same system (γ A_zᵀ times the equality rows added to the
first rows), but one whose top left block stays definite where H = P + A_lᵀ(WᵀW)⁻¹A_l
is nearly singular on unknowns only the equalities determine (an LP's free variables;
rows inactive at the end weigh ~1e-10). Without it the IPM stalled at errors 1e-6–1e-5
on such problems. (The compiled kernel, dense throughout, adds it wherever there are
equalities.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from convexlayers.solvers._cone_ops import Cones, Scaling
from convexlayers.solvers._elimination import Factorization, Plan, analyse

_REG = 1e-10
_REFINE = 2
# With PSD cones: their formed (WᵀW)⁻¹ blocks lose accuracy near a low-rank solution
# (condition numbers near 1e16), and two more steps take such SDPs from 2e-6 to 4e-7.
_REFINE_PSD = 4
# A residual this small relative to the right-hand side needs no refinement; one this
# small needs one step: the factors' error contracts it by about as much again, to
# rounding level (measured on dense QPs: 1e-10 -> 1e-15 in one step, no gain from a
# second), which saves a product with the data per solve.
_EXACT = 1e-14
_ONE_STEP = 1e-6


@dataclass
class BatchQP:
    """Dense data of a batch of QPs: P (B, n, n) symmetric or None, q (B, n),
    A_z (B, z, n), b_z (B, z), A_l (B, l, n), b_l (B, l); the cone of the rows of A_l.
    ``scale`` (B,): 1 + the largest |A_z| and |A_l| entries, the scale of the
    regularization (computed when not given)."""

    P: np.ndarray | None
    q: np.ndarray
    Az: np.ndarray
    bz: np.ndarray
    Al: np.ndarray
    bl: np.ndarray
    cone: Cones
    scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.scale is None:
            self.scale = 1.0 + _abs_max(self.Az) + _abs_max(self.Al)
        self._gram: np.ndarray | None = None

    @property
    def gamma(self) -> np.ndarray:
        """(B,) the weight γ of A_zᵀA_z in the reduced matrix: 1 / scale. Data scaled
        by t scale H by t and A_zᵀA_z by t², so γ A_zᵀA_z keeps H's scale; at order one
        it is of order one, far above the regularization's 1e-10."""
        assert self.scale is not None
        return 1.0 / self.scale

    @property
    def gram(self) -> np.ndarray:
        """γ A_zᵀA_z (B, n, n), formed once per batch."""
        if self._gram is None:
            self._gram = self.gamma[:, None, None] * (np.swapaxes(self.Az, 1, 2) @ self.Az)
        return self._gram

    def take(self, idx: np.ndarray) -> BatchQP:
        if idx.size == self.q.shape[0] and (idx == np.arange(idx.size)).all():
            return self  # the whole batch: no copy
        assert self.scale is not None
        sub = BatchQP(None if self.P is None else self.P[idx], self.q[idx], self.Az[idx],
                      self.bz[idx], self.Al[idx], self.bl[idx], self.cone, self.scale[idx])
        if self._gram is not None:
            sub._gram = self._gram[idx]
        return sub


def _abs_max(M: np.ndarray) -> np.ndarray:
    """Per element, the largest |entry| of M (B, r, c), without a temporary |M|."""
    return np.maximum(M.max(axis=(1, 2), initial=0.0), -M.min(axis=(1, 2), initial=0.0))


def mv(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (M @ v[..., None])[..., 0]


def rmv(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (v[:, None, :] @ M)[:, 0]


def gram_fits(qp: BatchQP, pattern: np.ndarray) -> bool:
    """Whether γ A_zᵀA_z goes into the reduced matrix: where there are equalities, P is
    not clearly definite on every element (with P ≻ 0, H is), and it fills no entry that
    the top left block leaves empty (dense QPs, LPs with dense rows); not where it would
    make a sparse block dense (a simplex row ``sum(x) == 1`` beside a diagonal P,
    dynamics in MPC), which would cost the elimination plan its sparsity. ``pattern``:
    :func:`kkt_pattern`'s."""
    if not qp.Az.shape[1] or _definite(qp.P):
        return False
    n = qp.q.shape[1]
    return bool(pattern[:n, :n][_gram_pattern(qp)].all())


def _definite(P: np.ndarray | None) -> bool:
    """P (B, n, n) has a Cholesky factor on every element with no pivot below 1e-8 of
    its diagonal entry."""
    if P is None:
        return False
    try:
        L = np.linalg.cholesky(P)
    except np.linalg.LinAlgError:
        return False
    pivots = np.square(np.diagonal(L, axis1=1, axis2=2))
    return bool((pivots > 1e-8 * np.diagonal(P, axis1=1, axis2=2)).all())


def _gram_pattern(qp: BatchQP) -> np.ndarray:
    Azp = (qp.Az != 0).any(axis=0).astype(np.int32)
    return (Azp.T @ Azp) > 0


@dataclass(frozen=True)
class _Pairs:
    """Gᵀ M G for one group of cones (rows (count, q) of A_l, M block diagonal with one
    (q, q) block per cone) from products of nonzeros of G in the same cone: nonzeros
    (``cone``, ``row``, ``col``) (row: within the cone), pairs (``left``, ``right``) of
    them, and ``gather`` (n², pairs), which sums the pairs' products into H."""

    cone: np.ndarray
    row: np.ndarray
    col: np.ndarray
    left: np.ndarray
    right: np.ndarray
    gather: sp.csr_array

    def product(self, G: np.ndarray, M: np.ndarray | None) -> np.ndarray:
        """Gᵀ M G (B, n, n) for G (B, count, q, n), M (B, count, q, q) (None: I)."""
        a = G[:, self.cone, self.row, self.col]
        vals = a[:, self.left] * a[:, self.right]
        r, c = self.row[self.left], self.row[self.right]
        if M is None:
            vals *= r == c
        else:
            vals *= M[:, self.cone[self.left], r, c]
        n = G.shape[-1]
        return (self.gather @ vals.T).T.reshape(-1, n, n)


def _pairs(pattern: np.ndarray) -> _Pairs | None:
    """The pairs of a group whose pattern (count, q, n) makes them cost a twentieth of
    the dense product's flops (sparse rows: bounds, ``abs``, MPC constraints, a PSD
    variable's own svec), since a sparse gather is about that much slower per flop than
    BLAS; None otherwise."""
    count, q, n = pattern.shape
    cone, row, col = np.nonzero(pattern)  # sorted by cone
    per = np.bincount(cone, minlength=count)[cone]  # per nonzero: its cone's
    dense = count * (q * q * n + q * n * n) if q > 1 else count * n * n
    if 20 * per.sum() >= dense:
        return None
    left = np.repeat(np.arange(cone.size), per)
    first = np.repeat(np.cumsum(per) - per, per)
    start = np.searchsorted(cone, cone)  # the cone's first nonzero
    right = start[left] + np.arange(left.size) - first
    gather = sp.csr_array((np.ones(left.size), (col[left] * n + col[right],
                                                 np.arange(left.size))),
                          shape=(n * n, left.size))
    return _Pairs(cone, row, col, left, right, gather)


@dataclass(frozen=True)
class Layout:
    """What every iteration of a batch shares: the elimination plan and, per group of
    cones (the orthant's rows, then each group of second-order and of PSD cones), the
    pairs that form its part of A_lᵀ (WᵀW)⁻¹ A_l where its rows are sparse enough."""

    plan: Plan
    pairs: tuple[_Pairs | None, ...]
    gram: bool

    def hessian(self, qp: BatchQP, scaling: Scaling | None, out: np.ndarray) -> None:
        """A_lᵀ (WᵀW)⁻¹ A_l for the batch, written into ``out`` (B, n, n); W = I when
        ``scaling`` is None."""
        groups = _groups(qp.cone)
        blocks: list[np.ndarray | None] = [None] * len(groups)
        if scaling is not None:
            w = scaling.orthant_weights()
            blocks = [w[:, :, None, None], *scaling.soc_blocks(), *scaling.psd_blocks()]
        first = True
        for rows, M, pairs in zip(groups, blocks, self.pairs, strict=True):
            if rows.size:
                _part(qp.Al, rows, M, pairs, out, add=not first)
                first = False
        if first:
            out[...] = 0.0


def _part(Al: np.ndarray, rows: np.ndarray, M: np.ndarray | None, pairs: _Pairs | None,
          out: np.ndarray, add: bool) -> None:
    """One group's Gᵀ M G, G the rows (count, q) of A_l (see :meth:`Layout.hessian`),
    written into ``out`` or, with ``add``, added to it."""
    B, _, n = Al.shape
    if pairs is not None:
        part = pairs.product(Al[:, rows], M)
        out[...] = out + part if add else part
        return
    if rows.shape[1] == 1:  # the orthant (its rows first): M diagonal
        G = Al[:, : rows.shape[0]]
        left, right = np.swapaxes(G, 1, 2), (G if M is None else M[:, :, 0] * G)
    else:
        G = Al[:, rows]  # (B, count, q, n)
        MG = G if M is None else M @ G
        left, right = np.swapaxes(G.reshape(B, -1, n), 1, 2), MG.reshape(B, -1, n)
    if add:
        out += left @ right
    else:
        np.matmul(left, right, out=out)  # straight into K: no temporary, no copy


def _groups(cone: Cones) -> list[np.ndarray]:
    """The rows (count, q) of each group of cones: the orthant's (one row per cone),
    then those of :attr:`Cones.groups` and :attr:`Cones.psd_groups`."""
    return [np.arange(cone.nonneg)[:, None],
            *(rows for _, rows in (*cone.groups, *cone.psd_groups))]


def layout_for(qp: BatchQP) -> Layout:
    """The batch's :class:`Layout`."""
    Alp = (qp.Al != 0).any(axis=0)
    pattern, safe = kkt_pattern(qp)
    return Layout(analyse(pattern, safe), tuple(_pairs(Alp[rows]) for rows in
                                                _groups(qp.cone)), gram_fits(qp, pattern))


def kkt_pattern(qp: BatchQP) -> tuple[np.ndarray, np.ndarray]:
    """The reduced KKT matrix's pattern (N, N) over the batch, and its safe pivots (N,):
    primal unknowns with a diagonal entry of P or an inequality row."""
    n, z = qp.q.shape[1], qp.Az.shape[1]
    Pp = np.zeros((n, n), dtype=bool) if qp.P is None else (qp.P != 0).any(axis=0)
    Alp = (qp.Al != 0).any(axis=0)
    Azp = (qp.Az != 0).any(axis=0)
    pattern = np.zeros((n + z, n + z), dtype=bool)
    # Columns couple when they share an orthant row or a second-order or PSD cone.
    touch = np.concatenate([Alp[: qp.cone.nonneg]] + [
        Alp[rows].any(axis=1) for _, rows in (*qp.cone.groups, *qp.cone.psd_groups)]
    ).astype(np.int32)
    pattern[:n, :n] = Pp | ((touch.T @ touch) > 0)
    pattern[n:, :n] = Azp
    pattern[:n, n:] = Azp.T
    safe = np.concatenate([np.diagonal(Pp) | Alp.any(axis=0), np.zeros(z, dtype=bool)])
    return pattern, safe


class Reduced:
    """The factored reduced KKT matrix of one iteration, for a batch (W = I when
    ``scaling`` is None: the starting point's least-squares system)."""

    def __init__(self, qp: BatchQP, scaling: Scaling | None, layout: Layout) -> None:
        n, z = qp.q.shape[1], qp.Az.shape[1]
        K = np.empty((qp.q.shape[0], n + z, n + z))
        layout.hessian(qp, scaling, K[:, :n, :n])
        if qp.P is not None:
            K[:, :n, :n] += qp.P
        self.gram = layout.gram  # False without equalities (see gram_fits)
        if self.gram:
            K[:, :n, :n] += qp.gram
        K[:, :n, n:] = np.swapaxes(qp.Az, 1, 2)
        K[:, n:, :n] = qp.Az
        K[:, n:, n:] = 0.0
        # ρ relative to the data, not to W (whose entries reach 1e10 near the end).
        scale = qp.scale
        assert scale is not None
        signs = np.concatenate([np.ones(n), -np.ones(z)])
        idx = np.arange(n + z)
        K[:, idx, idx] += _REG * scale[:, None] * signs
        self.qp, self.scaling = qp, scaling
        self.factors = Factorization(layout.plan, K, signs, _REG * scale)

    def apply(self, v: np.ndarray) -> np.ndarray:
        """The unregularized K v, by the data and W (not by the formed K: near the end
        a second-order cone's block of (WᵀW)⁻¹ is formed with cancellation)."""
        qp, n = self.qp, self.qp.q.shape[1]
        vx, vz = v[:, :n], v[:, n:]
        Gv = mv(qp.Al, vx)
        top = rmv(qp.Al, Gv if self.scaling is None else self.scaling.hinv(Gv)) + rmv(qp.Az, vz)
        if qp.P is not None:
            top += mv(qp.P, vx)
        return np.concatenate([top, mv(qp.Az, vx)], axis=1)

    def solve(self, rhs: np.ndarray) -> np.ndarray:
        """K⁻¹ rhs, with up to ``_REFINE`` (``_REFINE_PSD``) steps of iterative refinement
        against the unregularized K; they stop once every element's residual is at
        rounding level, or after a step from a residual below ``_ONE_STEP``."""
        z = self._solve(rhs)
        scale = np.abs(rhs).max(axis=1, initial=0.0)
        for _ in range(_REFINE_PSD if self.qp.cone.psd else _REFINE):
            r = rhs - self.apply(z)
            size = np.abs(r).max(axis=1, initial=0.0)
            if (size <= _EXACT * scale).all():
                break
            z += self._solve(r)
            if (size <= _ONE_STEP * scale).all():
                break
        return z

    def _solve(self, rhs: np.ndarray) -> np.ndarray:
        """The factors' solution of (r_x + γ A_zᵀ r_z, r_z) (see the module), or of
        (r_x, r_z) where the layout leaves γ A_zᵀA_z out."""
        qp, n = self.qp, self.qp.q.shape[1]
        if self.gram:
            rhs = rhs.copy()
            rhs[:, :n] += qp.gamma[:, None] * rmv(qp.Az, rhs[:, n:])
        return self.factors.solve(rhs)
