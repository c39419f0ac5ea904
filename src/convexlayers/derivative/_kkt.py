"""The KKT Jacobian J = [[P, AᵀD], [A, D − I]] of a batch, assembled without a loop.

Every element of a batch shares the sparsity pattern of P and A, and D = DΠ_{K*}(v)
is block diagonal with blocks fixed by the cone. So J has one pattern for the whole
batch: each of its nonzeros is a sum of products (data entry) × (entry of D), fixed
once. We record those products as index arrays, once per layout, and fill the values
of the whole batch with one gather and one sparse product; the dense matrices, or one
CSC matrix per element, are then views on the same values.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from convexlayers.cones import ConeJacobian
from convexlayers.derivative._kkt_blocks import BlockGroup, block_products, plan_blocks
from convexlayers.derivative._kkt_lift import lift_values, plan_lift
from convexlayers.derivative._schur import PairPlan, pair_plan
from convexlayers.derivative._structure import Structure

# Layout of the D blocks: (row offset, count, size) per run of equal cones.
Layout = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, eq=False)
class KKTPattern:
    """J's CSC pattern and how its values come from the data and D.

    Value of contribution c: ``sign[c] · data[:, src[c]] · dflat[:, dsrc[c]]``, where
    ``data = [P values | A values | 1]`` and ``dflat = [diag of D | D blocks | 1]``;
    ``gather`` (nnz, contributions) sums contributions into J's nonzeros.

    Attributes:
        n: the number of primal unknowns (J's first block).
        size: N = n + m, and one more per lifted cone (:mod:`._kkt_lift`).
        indices, indptr: J's CSC pattern (column-major order of its nonzeros).
        src, dsrc, sign: per contribution, as above.
        gather: (nnz, contributions) 0/1 sparse matrix.
        flat: per nonzero, its index in a dense, row-major (N, N) matrix.
        diagonal: position of each diagonal entry among the nonzeros (all are stored).
        col_of: per nonzero, its column (``indices`` holds its row).
        row_sum, col_sum: (N, nnz) 0/1 sparse matrices summing per-nonzero products into
            J's rows (for J z) or columns (for Jᵀ z).
        pairs: the defined variables to eliminate before a dense factorization
            (:mod:`._schur`), or None.
        blocks: the Aᵀ D entries of dense cone blocks made by matrix products instead
            (:mod:`._kkt_blocks`): per product, its plan and the nonzeros it fills.
        lifted: the runs of D's stacks kept sparse by new unknowns (:mod:`._kkt_lift`).
    """

    n: int
    size: int
    indices: np.ndarray
    indptr: np.ndarray
    src: np.ndarray
    dsrc: np.ndarray
    sign: np.ndarray
    gather: sp.csr_array
    flat: np.ndarray
    diagonal: np.ndarray
    col_of: np.ndarray
    row_sum: sp.csr_array
    col_sum: sp.csr_array
    pairs: PairPlan | None
    blocks: tuple[tuple[BlockGroup, np.ndarray], ...]
    lifted: tuple[int, ...]

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    @cached_property
    def scaled(self) -> np.ndarray:
        """Contributions with a factor of D other than the constant 1."""
        return np.flatnonzero(self.dsrc != self.dsrc.max())

    @cached_property
    def signed(self) -> np.ndarray:
        """Contributions with a sign other than +1."""
        return np.flatnonzero(self.sign != 1)

    @property
    def factored(self) -> tuple[int, int]:
        """(unknowns, nonzeros) of the matrix a dense factorization works on: J's, or
        the Schur complement's after eliminating ``pairs``."""
        if self.pairs is None:
            return self.size, self.nnz
        return self.pairs.size, self.pairs.nnz


def _row_blocks(m: int, layout: Layout, skip: tuple[int, ...]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of D: first row of its block, block size, and index of D[row, first] in
    dflat (whose blocks leave out the runs ``skip``)."""
    start, size, base = np.arange(m), np.ones(m, dtype=np.int64), np.arange(m)
    offset_in_flat = m
    for i, (offset, count, k) in enumerate(layout):
        rows = offset + np.arange(count * k)
        cone = (rows - offset) // k
        start[rows] = offset + cone * k
        size[rows] = k
        if i in skip:
            continue
        within = rows - start[rows]
        base[rows] = offset_in_flat + cone * k * k + within * k
        offset_in_flat += count * k * k
    return start, size, base


def _contributions(st: Structure, layout: Layout, by_block: np.ndarray,
                   runs: tuple[int, ...]):
    """(row, col, src, dsrc, sign) of every product that makes up J, but the Aᵀ D terms
    of the nonzeros of A marked ``by_block``; the lifted ``runs`` (:mod:`._kkt_lift`)
    with their new unknowns. Also the number of those."""
    n, m = st.n, st.m
    n_p = 0 if st.P is None else st.P.rows.size
    n_a = st.A.rows.size
    dense_part = m + sum(c * k * k for i, (_, c, k) in enumerate(layout) if i not in runs)
    one_data = n_p + n_a
    one_d = dense_part + sum(4 * layout[i][1] * layout[i][2] for i in runs)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | int, np.ndarray | int]] = []
    if st.P is not None:
        i, j, k = st.P.rows, st.P.cols, np.arange(n_p)
        off = i != j
        parts += [(i, j, k, one_d), (j[off], i[off], k[off], one_d)]
    ar, ac, ak = st.A.rows, st.A.cols, n_p + np.arange(n_a)
    parts.append((n + ar, ac, ak, one_d))  # A
    lift = plan_lift(n, n + m, (ar, ac, ak), layout, runs, m, dense_part, one_data)
    start, size, base = _row_blocks(m, layout, runs)
    # Aᵀ D: entry (c, n + r') gets A[r, c] · D[r, r'] for r' in r's block.
    reps = np.where(by_block | lift.entries, 0, size[ar])
    which = np.repeat(np.arange(n_a), reps)
    step = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    parts.append((ac[which], n + start[ar][which] + step, ak[which], base[ar][which] + step))
    # D − I: D's diagonal and blocks, then −1 on every diagonal entry of the v block.
    rows = np.arange(m)
    blocked = size > 1
    parts.append((n + rows[~blocked], n + rows[~blocked], one_data, rows[~blocked]))
    reps = np.where(lift.rows, 0, size)[blocked]
    r = np.repeat(rows[blocked], reps)
    step = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)
    parts.append((n + r, n + start[r] + step, one_data, base[r] + step))
    parts += lift.parts
    # Last, the whole diagonal: −1 on the v block and the new unknowns, 0 on the x block
    # (kept in the pattern so that a regularization can be added to the values).
    N = n + m + lift.extra
    diag = np.arange(N)
    row = np.concatenate([np.asarray(p[0]) for p in parts] + [diag])
    col = np.concatenate([np.asarray(p[1]) for p in parts] + [diag])
    src = np.concatenate([np.broadcast_to(p[2], np.shape(p[0])) for p in parts]
                         + [np.full(N, one_data)])
    dsrc = np.concatenate([np.broadcast_to(p[3], np.shape(p[0])) for p in parts]
                          + [np.full(N, one_d)])
    sign = np.ones(row.size)
    sign[-N:] = np.concatenate([np.zeros(n), -np.ones(N - n)])
    return (row, col, src, dsrc, sign), N


def _build(st: Structure, layout: Layout, runs: tuple[int, ...]) -> KKTPattern:
    groups, by_block = plan_blocks(st.n, st.A.rows, st.A.cols, layout, skip=runs)
    (row, col, src, dsrc, sign), N = _contributions(st, layout, by_block, runs)
    block_keys = [g.cols.astype(np.int64) * N + g.rows for g in groups]
    keys, pos = np.unique(np.concatenate([col.astype(np.int64) * N + row, *block_keys]),
                          return_inverse=True)
    gather = sp.csr_array((np.ones(row.size), (pos[:row.size], np.arange(row.size))),
                          shape=(keys.size, row.size))
    blocks = tuple((g, np.searchsorted(keys, k)) for g, k in zip(groups, block_keys, strict=True))
    rows, cols = keys % N, keys // N
    indptr = np.zeros(N + 1, dtype=np.int64)
    np.add.at(indptr, cols + 1, 1)
    diagonal = np.searchsorted(keys, np.arange(N) * (N + 1))
    flat = rows * N + cols
    nz = np.arange(keys.size)
    ones = np.ones(keys.size)
    return KKTPattern(st.n, N, rows, np.cumsum(indptr), src, dsrc, sign, gather, flat,
                      diagonal, cols, sp.csr_array((ones, (rows, nz)), shape=(N, keys.size)),
                      sp.csr_array((ones, (cols, nz)), shape=(N, keys.size)),
                      pair_plan(N, st.n, st.dims.zero, flat), blocks, runs)


def _runs(D: ConeJacobian) -> list[tuple[int, np.ndarray | tuple[np.ndarray, ...]]]:
    """D's runs of cones in row order: (offset, dense (B, count, k, k) stack, or the
    factored parts of a run of second-order cones)."""
    return sorted([*D.stacks, *D.low_rank], key=lambda run: run[0])


def _shape(run) -> tuple[int, int, int]:
    offset, arr = run
    shape = arr[0].shape if isinstance(arr, tuple) else arr.shape
    return offset, shape[1], shape[2]


def kkt_pattern(st: Structure, D: ConeJacobian) -> KKTPattern:
    """J's pattern for data laid out as ``st`` and D's block layout (cached); D's
    factored runs are lifted (:mod:`._kkt_lift`)."""
    runs = _runs(D)
    layout = tuple(_shape(run) for run in runs)
    lifted = tuple(i for i, (_, arr) in enumerate(runs) if isinstance(arr, tuple))
    key = (id(st), layout, lifted)
    pattern = _PATTERNS.get(key)
    if pattern is None:
        pattern = _PATTERNS[key] = _build(st, layout, lifted)
        weakref.finalize(st, _PATTERNS.pop, key, None)
    return pattern


# Patterns by (identity of the structure, D's layout, lifted runs); an entry goes with
# its structure.
_PATTERNS: dict[tuple[int, Layout, tuple[int, ...]], KKTPattern] = {}


def kkt_values(pattern: KKTPattern, p_vals: np.ndarray | None, a_vals: np.ndarray,
               D: ConeJacobian) -> np.ndarray:
    """(B, nnz) values of J on ``pattern`` for a batch, as the transpose of a C-ordered
    (nnz, B) array (the layout of J's products; column gathers stay row gathers)."""
    batch = a_vals.shape[0]
    ones = np.ones((1, batch))
    # In (entries, batch) layout: row gathers, and a sparse product with no transposed copy.
    data = np.concatenate([*([] if p_vals is None else [p_vals.T]), a_vals.T, ones])
    # dflat: D's diagonal, its dense blocks, then the lifted runs' parts (as in _build).
    segments, lifted, stacks = [D.diag.T], [], {}
    for i, (_, arr) in enumerate(_runs(D)):
        if isinstance(arr, tuple):
            lifted.append(lift_values(*arr))
        else:
            stacks[i] = arr
            segments.append(arr.reshape(batch, -1).T)
    dflat = np.concatenate([*segments, *lifted, ones])
    products = data[pattern.src]
    scaled, signed = pattern.scaled, pattern.signed
    products[scaled] *= dflat[pattern.dsrc[scaled]]
    products[signed] *= pattern.sign[signed, None]
    values = pattern.gather @ products
    for group, nonzeros in pattern.blocks:
        values[nonzeros] = block_products(group, a_vals, stacks[group.stack]).T
    return values.T  # a view of the (nnz, B) products: see KKTMatrix


def dense(pattern: KKTPattern, values: np.ndarray) -> np.ndarray:
    """(B, N, N) dense J from its values."""
    N = pattern.size
    out = np.zeros((values.shape[0], N * N))
    out[:, pattern.flat] = values
    return out.reshape(-1, N, N)


def matvec(pattern: KKTPattern, values_t: np.ndarray, z: np.ndarray,
           transpose: bool) -> np.ndarray:
    """J z (or Jᵀ z) for a batch: values laid out (nnz, B), z (B, N, K)."""
    B, N, K = z.shape
    src, dst = ((pattern.indices, pattern.col_sum) if transpose
                else (pattern.col_of, pattern.row_sum))
    zt = np.ascontiguousarray(np.swapaxes(z, 0, 1))  # (N, B, K): its rows are gathered
    products = zt[src]
    products *= values_t[:, :, None]
    out = dst @ products.reshape(src.size, B * K)
    return np.swapaxes(out.reshape(N, B, K), 0, 1)


def sparse(pattern: KKTPattern, values: np.ndarray) -> list[sp.csc_array]:
    """One CSC J per batch element, sharing the pattern's index arrays."""
    N = pattern.size
    return [sp.csc_array((v, pattern.indices, pattern.indptr), shape=(N, N)) for v in values]
