"""Factorizations of the regularized KKT Jacobian J_δ = J + δ Σ for a whole batch.

Three kinds: the dense J_δ LU-factored whole (:class:`DenseFactors`), the same after
eliminating CVXPY's defined variables (:class:`SchurFactors`, see :mod:`._schur`), and
SuperLU per element (:class:`SparseFactors`). Dense factors are LAPACK's ``getrf``
called element by element *in place* on one (B, N, N) array: SciPy's batched
``lu_factor`` copies the batch in and stacks the results out, and on this size of
problem (tens of MB per batch) each extra pass over memory costs about as much as the
factorization itself.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse.linalg as spla
from scipy.linalg import lapack

from convexlayers.derivative._kkt import dense, sparse
from convexlayers.derivative._schur import PairPlan, matrices, safe_pivots

if TYPE_CHECKING:
    from convexlayers.derivative._linear import KKTMatrix

# δ relative to the largest entry of J; iterative refinement removes its effect.
REGULARIZATION = 1e-9


class Factorization(abc.ABC):
    """Factors of J_δ for a batch; ``apply`` solves J_δ z = r for some of its elements."""

    method: str

    @abc.abstractmethod
    def apply(self, rhs: np.ndarray, transpose: bool, idx: np.ndarray) -> np.ndarray:
        """J_δ⁻¹ rhs (or J_δ⁻ᵀ rhs) for the elements ``idx``; rhs is (len(idx), N, K)."""


def diagonal_shift(J: KKTMatrix) -> np.ndarray:
    """(B, N) diagonal δ Σ = δ diag(I_n, −I_m) that makes J_δ, δ relative to max |J|."""
    n = J.pattern.n
    v = J.values
    scale = np.maximum(1.0, np.maximum(v.max(axis=1, initial=0.0), -v.min(axis=1, initial=0.0)))
    sigma = np.concatenate([np.ones(n), -np.ones(J.size - n)])
    return REGULARIZATION * scale[:, None] * sigma


def _add_to_diagonal(A: np.ndarray, shift: np.ndarray) -> None:
    diag = np.arange(A.shape[1])
    A[:, diag, diag] += shift


def lu_in_place(A: np.ndarray) -> np.ndarray:
    """LU-factor every A[b] (B, N, N) in place; returns the pivots (B, N).

    ``getrf`` works on A[b]ᵀ, the Fortran-ordered view of a C-ordered A[b], so no copy is
    made: what is stored are the factors of A[b]ᵀ (see :func:`lu_solve`). A singular A[b]
    keeps its zero pivot; solves with it give non-finite values, which refinement rejects.
    """
    piv = np.empty(A.shape[:2], dtype=np.int32)
    for b in range(A.shape[0] if A.shape[1] else 0):
        _, piv[b], _ = lapack.dgetrf(A[b].T, overwrite_a=True)
    return piv


def lu_solve(lu: np.ndarray, piv: np.ndarray, rhs: np.ndarray, transpose: bool,
             idx: np.ndarray) -> np.ndarray:
    """A[b]⁻¹ rhs (or A[b]⁻ᵀ rhs) for b in ``idx``, from :func:`lu_in_place`'s factors."""
    out = np.empty_like(rhs)
    trans = 0 if transpose else 1  # the factors are of A[b]ᵀ
    for i, b in enumerate(idx if lu.shape[1] else ()):
        out[i], _ = lapack.dgetrs(lu[b].T, piv[b], rhs[i], trans=trans)
    return out


class DenseFactors(Factorization):
    """LU of the dense J_δ of every element (one array for the batch, factored in place)."""

    method = "lu"

    def __init__(self, J: KKTMatrix) -> None:
        self.lu = dense(J.pattern, J.values)
        _add_to_diagonal(self.lu, diagonal_shift(J))
        self.piv = lu_in_place(self.lu)

    def apply(self, rhs, transpose, idx):
        return lu_solve(self.lu, self.piv, rhs, transpose, idx)


class SparseFactors(Factorization):
    """SuperLU of each element's sparse J_δ."""

    method = "sparse_lu"

    def __init__(self, J: KKTMatrix) -> None:
        values = J.values.copy()
        values[:, J.pattern.diagonal] += diagonal_shift(J)
        self.lu = [spla.splu(Jb) for Jb in sparse(J.pattern, values)]

    def apply(self, rhs, transpose, idx):
        trans = "T" if transpose else "N"
        return np.stack([self.lu[b].solve(r, trans=trans) for b, r in zip(idx, rhs, strict=True)])


class SchurFactors(Factorization):
    """J_δ's pivot blocks inverted and its Schur complement S LU-factored
    (:mod:`._schur`)."""

    method = "lu"

    def __init__(self, J: KKTMatrix, plan: PairPlan) -> None:
        self.plan = plan
        shift = diagonal_shift(J)  # only diagonal entries change: no copy of J's values
        a, b, c, d = (J.values[:, p] for p in plan.block)
        a, d = a + shift[:, plan.j], d + shift[:, plan.v]
        det = a * d - b * c
        self.inv = np.stack([d, -b, -c, a]) / det  # B⁻¹ entries, (4, B, k)
        S, self.U, self.W = matrices(plan, J.values)
        _add_to_diagonal(S, shift[:, plan.keep])
        ix = np.ix_(np.arange(S.shape[0]), plan.urows, plan.wcols)
        S[ix] -= self.U @ (self.inv[3][..., None] * self.W)
        self.lu, self.piv = S, lu_in_place(S)

    def _pivot_solve(self, idx, rj, rv, transpose):
        i_jj, i_jv, i_vj, i_vv = (m[idx][..., None] for m in self.inv)
        if transpose:
            i_jv, i_vj = i_vj, i_jv
        return i_jj * rj + i_jv * rv, i_vj * rj + i_vv * rv

    def apply(self, rhs, transpose, idx):
        p = self.plan
        U, W = self.U[idx], self.W[idx]
        into, outof = (p.wcols, p.urows) if transpose else (p.urows, p.wcols)
        into_m = np.swapaxes(W, 1, 2) if transpose else U
        outof_m = np.swapaxes(U, 1, 2) if transpose else W
        rj, rv = rhs[:, p.j], rhs[:, p.v]
        _, yv = self._pivot_solve(idx, rj, rv, transpose)
        r_rest = rhs[:, p.keep]
        r_rest[:, into] -= into_m @ yv
        z_rest = lu_solve(self.lu, self.piv, r_rest, transpose, idx)
        zj, zv = self._pivot_solve(idx, rj, rv - outof_m @ z_rest[:, outof], transpose)
        out = np.empty_like(rhs)
        out[:, p.keep], out[:, p.j], out[:, p.v] = z_rest, zj, zv
        return out


def schur_or_dense(J: KKTMatrix, plan: PairPlan | None) -> list[tuple[np.ndarray, Factorization]]:
    """Factor J's elements: through the pairs where their pivots are safe, whole otherwise.
    Returns (elements, factorization of ``J.take(elements)``) groups."""
    everyone = np.arange(J.batch)
    if plan is None:
        return [(everyone, DenseFactors(J))]
    safe = safe_pivots(plan, J.values)
    groups: list[tuple[np.ndarray, Factorization]] = []
    if safe.all():
        return [(everyone, SchurFactors(J, plan))]
    if safe.any():
        groups.append((everyone[safe], SchurFactors(J.take(everyone[safe]), plan)))
    groups.append((everyone[~safe], DenseFactors(J.take(everyone[~safe]))))
    return groups
