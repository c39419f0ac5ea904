"""The program data layout the derivative works on, and batched products with it.

Data of one element is ``[P values | q | A values | b]`` on fixed sparsity
patterns (P: upper triangle of a symmetric matrix). Products are done for a
whole batch at once by scattering pattern entries with sparse matrices.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import scipy.sparse as sp

from convexlayers.cones import ConeDims


class Pattern(Protocol):
    """A fixed sparsity pattern (``compile.SparsePattern`` is one).

    Members are read-only properties, so frozen dataclasses and cached properties match.
    """

    @property
    def shape(self) -> tuple[int, int]: ...

    @property
    def rows(self) -> np.ndarray: ...

    @property
    def cols(self) -> np.ndarray: ...

    @property
    def row_scatter(self) -> sp.csr_array: ...

    @property
    def col_scatter(self) -> sp.csr_array: ...

    @property
    def off_diagonal(self) -> np.ndarray: ...

    def matrix(self, values: np.ndarray) -> sp.csc_array: ...


class Structure(Protocol):
    """Sparsity and layout of the program data (a compiled ``DataMap`` is one).

    Members are read-only properties, so a frozen dataclass such as ``DataMap`` matches.
    """

    @property
    def n(self) -> int: ...

    @property
    def m(self) -> int: ...

    @property
    def dims(self) -> ConeDims: ...

    @property
    def P(self) -> Pattern | None: ...

    @property
    def A(self) -> Pattern: ...

    def split(self, data: np.ndarray) -> tuple[np.ndarray, ...]: ...


def _apply(S: sp.csr_array, values: np.ndarray) -> np.ndarray:
    """(K, B) pattern entries summed through a (size, K) scatter matrix: (B, size).

    The entries are laid out (K, B) so that the gathers that make them are row gathers
    and the sparse product reads them without a transposed copy."""
    return (S @ values).T


def a_matvec(st: Structure, a_vals: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A x for a batch."""
    return _apply(st.A.row_scatter, np.multiply(x.T[st.A.cols], a_vals.T))


def a_rmatvec(st: Structure, a_vals: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Aᵀ y for a batch."""
    return _apply(st.A.col_scatter, np.multiply(y.T[st.A.rows], a_vals.T))


def p_matvec(st: Structure, p_vals: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P x for a batch, P symmetric and stored as its upper triangle (zero if no P)."""
    if st.P is None:
        return np.zeros_like(x)
    P = st.P
    xt = x.T
    mirrored = np.multiply(xt[P.rows], np.where(P.off_diagonal, p_vals, 0.0).T)
    return _apply(P.row_scatter, np.multiply(xt[P.cols], p_vals.T)) + _apply(P.col_scatter,
                                                                           mirrored)
