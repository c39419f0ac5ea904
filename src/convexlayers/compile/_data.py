"""The affine map from parameters to cone-program data, built once per layer.

CVXPY's parametric program stores, for each of P, q and [A | b], a sparse
tensor whose product with the reduced parameter vector (plus a trailing 1)
gives the matrix entries. We keep only the rows that can be nonzero, fix the
sparsity patterns of P (upper triangle) and A once, and compose with the
parameter maps of :mod:`._params`. For a batch Θ of parameter vectors, all
data is then one sparse product:

    data(Θ) = Θ C_linᵀ + log(Θ) C_logᵀ + c0,

laid out as ``[P values | q | A values | b]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from convexlayers.cones import ConeDims
from convexlayers.solvers._base import ConeProgram

if TYPE_CHECKING:
    from cvxpy.reductions.dcp2cone.cone_matrix_stuffing import ParamConeProg


@dataclass(frozen=True, eq=False)
class SparsePattern:
    """A fixed CSC sparsity pattern; values come per batch element.

    The scatter matrices are built once and cached: batched products with the
    pattern are then one sparse-dense product each.
    """

    shape: tuple[int, int]
    indices: np.ndarray
    indptr: np.ndarray

    @property
    def nnz(self) -> int:
        return self.indices.shape[0]

    @property
    def rows(self) -> np.ndarray:
        return self.indices

    @cached_property
    def cols(self) -> np.ndarray:
        return np.repeat(np.arange(self.shape[1]), np.diff(self.indptr))

    @cached_property
    def row_scatter(self) -> sp.csr_array:
        """(rows, nnz): sums entry k into row ``rows[k]``."""
        return _scatter(self.rows, self.shape[0])

    @cached_property
    def col_scatter(self) -> sp.csr_array:
        """(cols, nnz): sums entry k into column ``cols[k]``."""
        return _scatter(self.cols, self.shape[1])

    @cached_property
    def off_diagonal(self) -> np.ndarray:
        return self.rows != self.cols

    def matrix(self, values: np.ndarray) -> sp.csc_array:
        return sp.csc_array((values, self.indices, self.indptr), shape=self.shape)

    @staticmethod
    def from_positions(
        rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]
    ) -> SparsePattern:
        """Pattern of positions already sorted in column-major order."""
        indptr = np.zeros(shape[1] + 1, dtype=np.int64)
        np.add.at(indptr, cols + 1, 1)
        return SparsePattern(shape, rows.astype(np.int64), np.cumsum(indptr))


def _scatter(index: np.ndarray, size: int) -> sp.csr_array:
    return sp.csr_array(
        (np.ones(index.size), (index, np.arange(index.size))), shape=(size, index.size)
    )


def _compress(
    tensor: sp.sparray, keep: Callable[[np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, sp.csr_array]:
    """Unique nonzero rows of a tensor (optionally restricted) and its compressed form."""
    coo = sp.coo_array(tensor)
    row, col, val = coo.row.astype(np.int64), coo.col, coo.data
    if keep is not None:
        mask = keep(row)
        row, col, val = row[mask], col[mask], val[mask]
    uniq = np.unique(row)
    compressed = sp.coo_array(
        (val, (np.searchsorted(uniq, row), col)), shape=(uniq.size, tensor.shape[1])
    )
    return uniq, compressed.tocsr()


def _row_block(tensor: sp.sparray, start: int, count: int) -> sp.csr_array:
    """Rows [start, start + count) of a tall sparse tensor, without converting all of it."""
    coo = sp.coo_array(tensor)
    row = coo.row.astype(np.int64)
    mask = (row >= start) & (row < start + count)
    return sp.csr_array(
        (coo.data[mask], (row[mask] - start, coo.col[mask])), shape=(count, tensor.shape[1])
    )


def _quadratic_rows(
    tensor: sp.sparray | None, n: int, width: int
) -> tuple[SparsePattern | None, sp.csr_array]:
    """Pattern of the upper triangle of P and the rows mapping parameters to its values.

    Only the symmetric part of P matters in ½xᵀPx, so the stored upper entry
    (i, j) is (P_ij + P_ji)/2 for i < j.
    """
    if tensor is None:
        return None, sp.csr_array((0, width))
    uniq, rows = _compress(tensor)
    i, j = uniq % n, uniq // n
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    keys, pos = np.unique(hi * n + lo, return_inverse=True)
    fold = sp.csr_array(
        (np.where(i == j, 1.0, 0.5), (pos, np.arange(uniq.size))), shape=(keys.size, uniq.size)
    )
    pattern = SparsePattern.from_positions(keys % n, keys // n, (n, n))
    return pattern, (fold @ rows).tocsr()


@dataclass(frozen=True)
class DataMap:
    """θ ↦ (P, q, A, b) for a batch, and its adjoint."""

    n: int
    m: int
    dims: ConeDims
    P: SparsePattern | None
    A: SparsePattern
    C_lin: sp.csr_array
    C_log: sp.csr_array | None
    c0: np.ndarray
    log_mask: np.ndarray

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        return (0 if self.P is None else self.P.nnz), self.n, self.A.nnz, self.m

    def split(self, data: np.ndarray) -> tuple[np.ndarray, ...]:
        """Split (..., nd) data into P values, q, A values, b (views)."""
        a, b, c = itertools.accumulate(self.sizes[:3])
        return data[..., :a], data[..., a:b], data[..., b:c], data[..., c:]

    def _log(self, theta: np.ndarray) -> np.ndarray:
        safe = np.where(self.log_mask, theta, 1.0)
        return np.where(self.log_mask, np.log(safe), 0.0)

    def apply(self, theta: np.ndarray) -> np.ndarray:
        """(B, p) parameters -> (B, nd) data."""
        out = (self.C_lin @ theta.T).T + self.c0
        if self.C_log is not None:
            out += (self.C_log @ self._log(theta).T).T
        return out

    def jvp(self, theta: np.ndarray, dtheta: np.ndarray) -> np.ndarray:
        out = (self.C_lin @ dtheta.T).T
        if self.C_log is not None:
            out += (self.C_log @ np.where(self.log_mask, dtheta / np.where(
                self.log_mask, theta, 1.0), 0.0).T).T
        return out

    @cached_property
    def _adjoints(self) -> tuple[sp.csr_array, sp.csr_array | None]:
        """C_linᵀ and C_logᵀ in CSR, made once (a transpose per backward cost 0.1 ms)."""
        return self.C_lin.T.tocsr(), None if self.C_log is None else self.C_log.T.tocsr()

    def vjp(self, theta: np.ndarray, gdata: np.ndarray) -> np.ndarray:
        lin_t, log_t = self._adjoints
        out = (lin_t @ gdata.T).T
        if log_t is not None:
            glog = (log_t @ gdata.T).T
            out += np.where(self.log_mask, glog / np.where(self.log_mask, theta, 1.0), 0.0)
        return out

    def program(self, data: np.ndarray) -> ConeProgram:
        """The numeric cone program of one batch element's (nd,) data."""
        p_vals, q, a_vals, b = self.split(data)
        P = None if self.P is None else self.P.matrix(p_vals)
        return ConeProgram(P=P, q=q, A=self.A.matrix(a_vals), b=b, dims=self.dims)


def build_data_map(
    param_prog: ParamConeProg,
    dims: ConeDims,
    L_lin: sp.csr_array,
    L_log: sp.csr_array | None,
    log_mask: np.ndarray,
) -> DataMap:
    """Compose CVXPY's tensors with the parameter maps into a :class:`DataMap`."""
    n = param_prog.x.size
    m = dims.size
    width = param_prog.total_param_size + 1
    P_pattern, P_rows = _quadratic_rows(param_prog.P, n, width)
    q_rows = _row_block(param_prog.q, 0, n)
    a_rows_idx, A_rows = _compress(param_prog.A, keep=lambda r: r < m * n)
    A_pattern = SparsePattern.from_positions(a_rows_idx % m, a_rows_idx // m, (m, n))
    b_rows = _row_block(param_prog.A, m * n, m)
    M = sp.vstack([P_rows, q_rows, -A_rows, b_rows], format="csr")
    theta_part, const = M[:, :-1], M[:, [-1]].toarray().ravel()
    return DataMap(
        n=n,
        m=m,
        dims=dims,
        P=P_pattern,
        A=A_pattern,
        C_lin=(theta_part @ L_lin).tocsr(),
        C_log=None if L_log is None else (theta_part @ L_log).tocsr(),
        c0=const,
        log_mask=log_mask,
    )
