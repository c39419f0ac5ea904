"""The reduced KKT system of the batched interior-point method, and the batch's data.

Every element of a batch shares one sparsity pattern, so what the iterations share is
computed once per solve (:class:`Layout`): the block-elimination plan of the reduced
matrix (:mod:`._elimination`) and, when the inequality rows are sparse, the pairs of
nonzeros that form ``A_lᵀ (WᵀW)⁻¹ A_l``. Each iteration then forms and factors

    [ P + A_lᵀ (WᵀW)⁻¹ A_l + ρI    A_zᵀ ]
    [ A_z                          −ρI  ]

for the whole batch (:class:`Reduced`), with W the Nesterov–Todd scaling of the cones
(:mod:`._cone_ops`): diagonal on the orthant, a dense block per second-order cone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from convexlayers.solvers._cone_ops import Cones, Scaling
from convexlayers.solvers._elimination import Factorization, Plan, analyse

_REG = 1e-10
_REFINE = 2


@dataclass
class BatchQP:
    """Dense data of a batch of QPs: P (B, n, n) symmetric or None, q (B, n),
    A_z (B, z, n), b_z (B, z), A_l (B, l, n), b_l (B, l); the cone of the rows of A_l."""

    P: np.ndarray | None
    q: np.ndarray
    Az: np.ndarray
    bz: np.ndarray
    Al: np.ndarray
    bl: np.ndarray
    cone: Cones

    def take(self, idx: np.ndarray) -> BatchQP:
        if idx.size == self.q.shape[0] and (idx == np.arange(idx.size)).all():
            return self  # the whole batch: no copy
        return BatchQP(None if self.P is None else self.P[idx], self.q[idx], self.Az[idx],
                       self.bz[idx], self.Al[idx], self.bl[idx], self.cone)


def mv(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (M @ v[..., None])[..., 0]


def rmv(M: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (v[:, None, :] @ M)[:, 0]


def plan_for(qp: BatchQP) -> Plan:
    """The elimination plan of the batch's reduced KKT pattern (see :mod:`._elimination`)."""
    return analyse(*kkt_pattern(qp))


@dataclass(frozen=True)
class _Pairs:
    """A_lᵀ W A_l from products of nonzeros in the same row: nonzeros (``rows``,
    ``cols``), pairs (``left``, ``right``) of them, and ``gather`` (n², pairs), which
    sums the pairs' products into H."""

    rows: np.ndarray
    cols: np.ndarray
    left: np.ndarray
    right: np.ndarray
    gather: sp.csr_array


@dataclass(frozen=True)
class Layout:
    """What every iteration of a batch shares: the elimination plan and, when A_l is
    sparse enough, the pairs that form A_lᵀ W A_l."""

    plan: Plan
    pairs: _Pairs | None = None

    def hessian(self, qp: BatchQP, scaling: Scaling | None) -> np.ndarray:
        """A_lᵀ (WᵀW)⁻¹ A_l for the batch (B, n, n); W = I when ``scaling`` is None."""
        cone = qp.cone
        k = cone.nonneg
        Al = qp.Al[:, :k]
        w = np.ones(Al.shape[:2]) if scaling is None else scaling.orthant_weights()
        pr = self.pairs
        if pr is None:
            H = np.swapaxes(Al, 1, 2) @ (w[:, :, None] * Al)
        else:
            a = Al[:, pr.rows, pr.cols]
            vals = w[:, pr.rows[pr.left]] * a[:, pr.left] * a[:, pr.right]
            n = qp.q.shape[1]
            H = (pr.gather @ vals.T).T.reshape(-1, n, n)
        blocks = None if scaling is None else scaling.soc_blocks()
        for g, (_, rows) in enumerate(cone.groups):
            G = qp.Al[:, rows]  # (B, count, q, n)
            MG = G if blocks is None else blocks[g] @ G
            H += np.swapaxes(G.reshape(G.shape[0], -1, G.shape[-1]), 1, 2) @ MG.reshape(
                G.shape[0], -1, G.shape[-1])
        return H


def layout_for(qp: BatchQP) -> Layout:
    """The batch's :class:`Layout`: pairs of nonzeros where they cost a twentieth of the
    dense product's flops (sparse rows: bounds, ``abs`` and MPC constraints), since a
    sparse gather is about that much slower per flop than BLAS."""
    plan = plan_for(qp)
    Alp = (qp.Al[:, : qp.cone.nonneg] != 0).any(axis=0)  # the orthant's rows
    rows, cols = np.nonzero(Alp)
    counts = np.bincount(rows, minlength=Alp.shape[0])[rows]  # per nonzero: its row's
    if 20 * counts.sum() >= Alp.size * Alp.shape[1]:
        return Layout(plan)
    left = np.repeat(np.arange(rows.size), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    start = np.searchsorted(rows, rows)  # the row's first nonzero
    right = start[left] + np.arange(left.size) - first
    n = Alp.shape[1]
    gather = sp.csr_array((np.ones(left.size), (cols[left] * n + cols[right],
                                                 np.arange(left.size))),
                          shape=(n * n, left.size))
    return Layout(plan, _Pairs(rows, cols, left, right, gather))


def kkt_pattern(qp: BatchQP) -> tuple[np.ndarray, np.ndarray]:
    """The reduced KKT matrix's pattern (N, N) over the batch, and its safe pivots (N,):
    primal unknowns with a diagonal entry of P or an inequality row."""
    n, z = qp.q.shape[1], qp.Az.shape[1]
    Pp = np.zeros((n, n), dtype=bool) if qp.P is None else (qp.P != 0).any(axis=0)
    Alp = (qp.Al != 0).any(axis=0)
    Azp = (qp.Az != 0).any(axis=0)
    pattern = np.zeros((n + z, n + z), dtype=bool)
    # Columns couple when they share an orthant row or a second-order cone.
    touch = np.concatenate([Alp[: qp.cone.nonneg]] + [
        Alp[rows].any(axis=1) for _, rows in qp.cone.groups]).astype(np.int32)
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
        K = np.zeros((qp.q.shape[0], n + z, n + z))
        K[:, :n, :n] = layout.hessian(qp, scaling)
        if qp.P is not None:
            K[:, :n, :n] += qp.P
        K[:, :n, n:] = np.swapaxes(qp.Az, 1, 2)
        K[:, n:, :n] = qp.Az
        # ρ relative to the data, not to W (whose entries reach 1e10 near the end).
        scale = 1.0 + np.abs(qp.Az).max(axis=(1, 2), initial=0.0) + np.abs(qp.Al).max(
            axis=(1, 2), initial=0.0)
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
        """K⁻¹ rhs, with iterative refinement against the unregularized K."""
        z = self.factors.solve(rhs)
        for _ in range(_REFINE):
            z += self.factors.solve(rhs - self.apply(z))
        return z
