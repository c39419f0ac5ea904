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
    shape: tuple[int, int]

    @property
    def rows(self) -> np.ndarray: ...

    @property
    def cols(self) -> np.ndarray: ...

    def matrix(self, values: np.ndarray) -> sp.csc_array: ...


class Structure(Protocol):
    """Sparsity and layout of the program data (a compiled ``DataMap`` is one)."""

    n: int
    m: int
    dims: ConeDims
    P: Pattern | None
    A: Pattern

    def split(self, data: np.ndarray) -> tuple[np.ndarray, ...]: ...


def scatter(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """out[:, index[k]] += values[:, k] for a batch: (B, K) -> (B, size)."""
    S = sp.csr_array(
        (np.ones(index.size), (index, np.arange(index.size))), shape=(size, index.size)
    )
    return (S @ values.T).T


def a_matvec(st: Structure, a_vals: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A x for a batch."""
    return scatter(a_vals * x[:, st.A.cols], st.A.rows, st.m)


def a_rmatvec(st: Structure, a_vals: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Aᵀ y for a batch."""
    return scatter(a_vals * y[:, st.A.rows], st.A.cols, st.n)


def p_matvec(st: Structure, p_vals: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P x for a batch, P symmetric and stored as its upper triangle (zero if no P)."""
    if st.P is None:
        return np.zeros_like(x)
    r, c = st.P.rows, st.P.cols
    off = r != c
    return scatter(p_vals * x[:, c], r, st.n) + scatter(p_vals[:, off] * x[:, r[off]],
                                                        c[off], st.n)
