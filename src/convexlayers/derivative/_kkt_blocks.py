"""The Aᵀ D part of J for the dense cone blocks of D, by batched matrix products.

Entry (c, n + r') of J is Σ_r A[r, c] D[r, r'] over the rows r of the cone block of r'.
Written as one product per (nonzero of A, entry of the block) it costs k gathers and
multiplies per nonzero of A, in Python-level passes over arrays of that size: for a
51-row second-order cone over a dense 50 × 100 A block, 255,000 products per element.
Here, instead, the column c's entries in the block form a dense k-vector a, and the
k entries of J are aᵀ D_block: the cones of a run (equal size k) whose blocks are met
by the same number C of columns are stacked into one (B, g, C, k) @ (B, g, k, k)
product.

The dense product does k multiply-adds per (column, block) pair and entry of J where
the per-product form does one per nonzero of A and entry of J; it is kept where the
pairs are not much sparser than that (``_DENSER``), and for at most ``_GROUPS`` distinct
C per run (each is one product, one Python step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# A run of blocks is done by matrix products when pairs · k ≤ _DENSER · (its nonzeros of
# A): every cone of at most _DENSER rows, larger ones when their columns are dense enough.
_DENSER = 8
_GROUPS = 32


@dataclass(frozen=True, eq=False)
class BlockGroup:
    """One (B, g, C, k) @ (B, g, k, k) product.

    Attributes:
        stack: which of D's runs of equal cones, in row order, the blocks come from.
        blocks: (g,) the cones of that run in this group.
        shape: (g, C, k).
        a_src: nonzeros of A (indices into its values) that fill the left factor...
        a_dst: ... at these flat places of a (g, C, k) array.
        rows, cols: J's entry for each flat place of the (g, C, k) product.
    """

    stack: int
    blocks: np.ndarray
    shape: tuple[int, int, int]
    a_src: np.ndarray
    a_dst: np.ndarray
    rows: np.ndarray
    cols: np.ndarray


def _group(stack: int, offset: int, n: int, k: int, members: np.ndarray, entries,
           pair_of, first) -> BlockGroup:
    """The group of cones ``members`` (equal pair counts C), from the run's entries
    (nonzero index, cone, row within the cone, column), each entry's pair, and the first
    pair of each cone."""
    e_src, e_blk, e_row, e_col = entries
    C = int(np.diff(first)[members[0]])
    place = np.full(first.size - 1, -1)
    place[members] = np.arange(members.size)
    mine = place[e_blk] >= 0
    g_e, c_e = place[e_blk[mine]], pair_of[mine] - first[e_blk[mine]]
    a_dst = (g_e * C + c_e) * k + e_row[mine]
    # The J entries: pair (block, column) × l in 0..k−1, row-major in (g, C, k).
    pair_col = np.zeros((members.size, C), dtype=np.int64)
    pair_col[g_e, c_e] = e_col[mine]
    cols = n + offset + (members[:, None, None] * k + np.arange(k))
    return BlockGroup(stack, members, (members.size, C, k), e_src[mine], a_dst,
                      np.broadcast_to(pair_col[:, :, None], (members.size, C, k)).ravel(),
                      np.broadcast_to(cols, (members.size, C, k)).ravel())


def plan_blocks(n: int, a_rows: np.ndarray, a_cols: np.ndarray,
                layout: tuple[tuple[int, int, int], ...], skip: tuple[int, ...] = ()
                ) -> tuple[list[BlockGroup], np.ndarray]:
    """The products for the runs of D's blocks (but the runs ``skip``) worth doing
    densely, and a mask over A's nonzeros: those whose Aᵀ D terms these products make."""
    groups: list[BlockGroup] = []
    done = np.zeros(a_rows.size, dtype=bool)
    for stack, (offset, count, k) in enumerate(layout):
        if stack in skip:
            continue
        inside = np.flatnonzero((a_rows >= offset) & (a_rows < offset + count * k))
        if not inside.size:
            continue
        blk, row = np.divmod(a_rows[inside] - offset, k)
        pairs, pair_of = np.unique(blk * n + a_cols[inside], return_inverse=True)
        per_cone = np.bincount(pairs // n, minlength=count)
        sizes = np.unique(per_cone[per_cone > 0])
        if pairs.size * k > _DENSER * inside.size or sizes.size > _GROUPS:
            continue
        first = np.concatenate([[0], np.cumsum(per_cone)])
        entries = (inside, blk, row, a_cols[inside])
        groups += [_group(stack, offset, n, k, np.flatnonzero(per_cone == C), entries,
                          pair_of, first) for C in sizes]
        done[inside] = True
    return groups, done


def block_products(group: BlockGroup, a_vals: np.ndarray, stack: np.ndarray) -> np.ndarray:
    """(B, g·C·k) values of the group's J entries from A's values (B, nnz(A)) and the
    run's stacked D blocks (B, count, k, k)."""
    B = a_vals.shape[0]
    g, C, k = group.shape
    left = np.zeros((B, g * C * k))
    left[:, group.a_dst] = a_vals[:, group.a_src]
    return (left.reshape(B, g, C, k) @ stack[:, group.blocks]).reshape(B, -1)
