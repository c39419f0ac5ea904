"""J factored after eliminating CVXPY's defined variables (a Schur complement).

CVXPY writes ``sum_squares(L @ x)`` with a new variable t and equality rows
``t − L x = 0``: a 50-variable QP's J has 212 unknowns, of which 100 are t and the
multipliers of its rows. A variable j of J's first block is *paired* with a zero-cone
row r when the only entries of J's row and column j off the diagonal are at n + r.
On the zero cone D = I, so the pair's block of J is

    B = [[P_jj, a], [a, 0]]        (a = A[r, j]: nonsingular when a ≠ 0),

and the pair touches the other unknowns R only through row and column v = n + r. Pairs
do not touch each other, so eliminating all of them leaves the Schur complement

    S = J_RR − J_Rv (B⁻¹)_vv J_vR,

a rank-k update of J_RR (on the OptNet QP: S has 112 unknowns instead of 212, a fifth
of the LU's work and a quarter of its memory). Solves go through B⁻¹ and S's factors:
z_R = S⁻¹ (r_R − J_Rv (B⁻¹ r_E)_v), then z_E = B⁻¹ (r_E − [0; J_vR z_R]). Elements whose
pivot blocks are (numerically) singular are factored whole instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

# A pivot block B is used when |det B| ≥ PIVOT_TOL · (|B_jj B_vv| + |B_jv B_vj|).
PIVOT_TOL = 1e-10


@dataclass(frozen=True, eq=False)
class PairPlan:
    """Where the pairs and the rest sit among J's nonzeros (fixed per pattern).

    Attributes:
        j, v: (k,) the paired unknowns of J (a variable, its row's multiplier).
        keep: the other unknowns, in J's order; ``size`` of them.
        block: (4, k) positions among J's nonzeros of B's (j,j), (j,v), (v,j), (v,v).
        rest: (positions, flat index in a dense size × size S) of J_RR's nonzeros.
        col: (positions, row among ``urows``, pair) of J_Rv's nonzeros; ``urows`` are
            the rows of S they touch (indices into ``keep``).
        row: (positions, column among ``wcols``, pair) of J_vR's nonzeros.
        nnz: S's structural nonzeros.
    """

    j: np.ndarray
    v: np.ndarray
    keep: np.ndarray
    block: np.ndarray
    rest: tuple[np.ndarray, np.ndarray]
    col: tuple[np.ndarray, np.ndarray, np.ndarray]
    row: tuple[np.ndarray, np.ndarray, np.ndarray]
    urows: np.ndarray
    wcols: np.ndarray
    nnz: int

    @property
    def size(self) -> int:
        return int(self.keep.size)


def _pairs(N: int, n: int, zero: int, row: np.ndarray, col: np.ndarray):
    """(j, v) of the variables paired with a zero-cone row (see the module)."""
    off = row != col
    once_c = np.bincount(col[off], minlength=N)[:n] == 1
    once_r = np.bincount(row[off], minlength=N)[:n] == 1
    partner_c, partner_r = np.full(N, -1), np.full(N, -1)
    sel = off & (col < n)
    partner_c[col[sel]] = row[sel]
    sel = off & (row < n)
    partner_r[row[sel]] = col[sel]
    j = np.flatnonzero(once_c & once_r)
    v = partner_c[j]
    ok = (partner_r[j] == v) & (v >= n) & (v < n + zero)
    j, v = j[ok], v[ok]
    v, first = np.unique(v, return_index=True)  # one variable per row
    return j[first], v


def pair_plan(N: int, n: int, zero: int, flat: np.ndarray) -> PairPlan | None:
    """The plan for a J of N unknowns (n variables, ``zero`` zero-cone rows) whose
    nonzeros sit at ``flat`` (row-major indices into N × N); None without pairs."""
    row, col = flat // N, flat % N
    j, v = _pairs(N, n, zero, row, col)
    if not j.size:
        return None
    keep = np.setdiff1d(np.arange(N), np.concatenate([j, v]))
    local, pair = np.full(N, -1), np.full(N, -1)
    local[keep] = np.arange(keep.size)
    pair[v] = np.arange(v.size)
    order = np.argsort(flat)
    block = np.stack([order[np.searchsorted(flat, a * N + b, sorter=order)]
                      for a, b in ((j, j), (j, v), (v, j), (v, v))])
    in_rest = (local[row] >= 0) & (local[col] >= 0)
    rest = np.flatnonzero(in_rest)
    u = np.flatnonzero((pair[col] >= 0) & (local[row] >= 0))
    w = np.flatnonzero((pair[row] >= 0) & (local[col] >= 0))
    urows, u_at = np.unique(local[row[u]], return_inverse=True)
    wcols, w_at = np.unique(local[col[w]], return_inverse=True)
    flat_rest = local[row[rest]] * keep.size + local[col[rest]]
    return PairPlan(j, v, keep, block, (rest, flat_rest),
                    (u, u_at, pair[col[u]]), (w, w_at, pair[row[w]]), urows, wcols,
                    _nnz(keep.size, flat_rest, urows[u_at], pair[col[u]],
                         pair[row[w]], wcols[w_at], v.size))


def _nnz(size, flat_rest, u_row, u_pair, w_pair, w_col, k) -> int:
    """Structural nonzeros of S: J_RR's and those of the update J_Rv (B⁻¹)_vv J_vR."""
    U = sp.csr_array((np.ones(u_row.size), (u_row, u_pair)), shape=(size, k))
    W = sp.csr_array((np.ones(w_col.size), (w_pair, w_col)), shape=(k, size))
    update = (U @ W).tocoo()
    return int(np.union1d(flat_rest, update.row * size + update.col).size)


def matrices(plan: PairPlan, values: np.ndarray):
    """J_RR dense (B, size, size), J_Rv compressed (B, |urows|, k), J_vR (B, k, |wcols|)."""
    B, k, size = values.shape[0], plan.j.size, plan.size
    S = np.zeros((B, size * size))
    S[:, plan.rest[1]] = values[:, plan.rest[0]]
    U = np.zeros((B, plan.urows.size, k))
    pos, at, which = plan.col
    U[:, at, which] = values[:, pos]
    W = np.zeros((B, k, plan.wcols.size))
    pos, at, which = plan.row
    W[:, which, at] = values[:, pos]
    return S.reshape(B, size, size), U, W


def safe_pivots(plan: PairPlan, values: np.ndarray) -> np.ndarray:
    """Per element of J's ``values`` (B, nnz), whether every pivot block is safely
    nonsingular."""
    a, b, c, d = (values[:, p] for p in plan.block)
    det = a * d - b * c
    return (np.abs(det) >= PIVOT_TOL * (np.abs(a * d) + np.abs(b * c))).all(axis=1) & (
        np.abs(det) > 0).all(axis=1)
