"""Linear-solve strategies for the KKT-derivative system J z = r (and Jᵀ z = r).

J is square but neither symmetric nor always invertible: it is singular when the
solution is not unique, which CVXPY's auxiliary variables make common (the epigraph
variable of an inactive ``norm(x) <= r`` is free while x is unique). The remedy of
OSQP, QDLDL and Clarabel works here too: factor once the regularized matrix

    J_δ = J + δ Σ,   Σ = diag(I_n, −I_m),   δ = REGULARIZATION · max(1, max |J|),

which is nonsingular in practice (Σ matches the signs of the quasi-definite KKT form),
and recover a solution of the unregularized system by iterative refinement,
z ← z + J_δ⁻¹ (r − J z). Wherever J z = r has a solution the refinement converges to
one — at the rate δ / σ_min(J) on the nonsingular part, untouched along J's null
space — and since the outputs a user asks for are unique, every solution gives them
the same derivative. Only where refinement does not converge (an inconsistent system:
the derivative truly does not exist) is least squares used, and the residual is
always reported.

A factorization is an object (lineax's init/compute split): it is computed once and
reused by every right-hand side, transposed solves included, and even by a nearby J
(the polished point's), since refinement corrects against the J it is given.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from convexlayers.derivative._factors import (
    Factorization,
    SparseFactors,
    schur_or_dense,
)
from convexlayers.derivative._kkt import KKTPattern, dense, matvec, sparse

# Refinement stops at a backward error ||Jz − r|| / (||J|| ||z|| + ||r||) below
# BACKWARD_TOL, or after MAX_REFINE steps. A solve is accepted if its backward error is
# below ACCEPT_TOL, its relative residual ||Jz − r|| / ||r|| below RESIDUAL_TOL (on an
# inconsistent system z grows at every step, which fools the backward error alone), and
# ||J|| ||z|| / ||r|| (a lower bound on J's condition number) below MAX_CONDITION; else
# the element falls back to least squares.
BACKWARD_TOL = 1e-14
ACCEPT_TOL = 1e-10
RESIDUAL_TOL = 1e-7
MAX_REFINE = 25
MAX_CONDITION = 1e12
# Least squares (the last resort) by a dense SVD up to this many unknowns: at 700,
# LAPACK's gelsd takes 0.11 s where LSMR took 2.8 s on a degenerate ℓ1 LP's J.
DENSE_LSTSQ = 1500


@dataclass(frozen=True)
class SolveReport:
    """How each batch element's system was solved.

    Attributes:
        method: per element, "lu", "sparse_lu" or "lstsq".
        residual: per element, ||J z − r|| / max(||r||, tiny) of the returned z.
        refinements: per element, refinement steps taken (0 for least squares).
    """

    method: tuple[str, ...]
    residual: np.ndarray
    refinements: np.ndarray


class KKTMatrix:
    """J for a batch: one pattern and (B, nnz) values on it; products are taken on the
    values, dense matrices or one CSC matrix per element are formed only on request.

    Args:
        pattern: J's sparsity pattern.
        values: (B, nnz) values on it.
        dense_form: factor J densely (rather than as sparse matrices).
    """

    def __init__(self, pattern: KKTPattern, values: np.ndarray, dense_form: bool) -> None:
        self.pattern, self.values, self.is_dense = pattern, values, dense_form
        # The (nnz, B) layout of the products, kept when the values come in it.
        self._values_t: np.ndarray | None = values.T if values.T.flags.c_contiguous else None

    @property
    def batch(self) -> int:
        return self.values.shape[0]

    @property
    def size(self) -> int:
        return self.pattern.size

    def take(self, idx: np.ndarray) -> KKTMatrix:
        """The matrices of the batch elements ``idx`` (this one when that is every
        element in order; otherwise gathered in the (nnz, B) layout when the values
        have it, which a row gather of their transposed view would lose)."""
        if idx.size == self.batch and (idx == np.arange(idx.size)).all():
            return self
        if self._values_t is not None:
            # np.take keeps the C order (an advanced index on the last axis gives F order).
            return KKTMatrix(self.pattern, np.take(self._values_t, idx, axis=1).T,
                             self.is_dense)
        return KKTMatrix(self.pattern, self.values[idx], self.is_dense)

    def dense_matrices(self) -> np.ndarray:
        return dense(self.pattern, self.values)

    def sparse_matrices(self) -> list[sp.csc_array]:
        return sparse(self.pattern, self.values)

    def norm(self) -> np.ndarray:
        """Frobenius norm of each element's J."""
        return np.linalg.norm(self.values, axis=1)

    def matvec(self, z: np.ndarray, transpose: bool) -> np.ndarray:
        """J z (or Jᵀ z) for z of shape (B, N, K)."""
        if self._values_t is None:  # laid out once for the products of a refinement
            self._values_t = np.ascontiguousarray(self.values.T)
        return matvec(self.pattern, self._values_t, z, transpose)


class AbstractLinearSolver(abc.ABC):
    """How J is factored: dense for the whole batch, or sparse element by element."""

    @abc.abstractmethod
    def wants_dense(self, size: int, nnz: int) -> bool:
        """Whether J (N = ``size`` unknowns, ``nnz`` nonzeros) should be dense."""

    def factor(self, J: KKTMatrix) -> Factorization:
        """Factor J_δ for every batch element (once; reused by every solve). Dense
        factors eliminate the pattern's defined variables first (:mod:`._schur`)."""
        if not J.is_dense:
            return SparseFactors(J)
        groups = schur_or_dense(J, J.pattern.pairs)
        if len(groups) == 1:
            return groups[0][1]
        store = FactorStore(J.batch)
        for idx, factors in groups:
            store.set(idx, factors)
        return store


class DenseLU(AbstractLinearSolver):
    """Batched dense LU (LAPACK through SciPy), refined; least squares where it fails.

    Never uses torch.linalg, so it is unaffected by the oneMKL batched-``getrf`` hang
    of some torch CPU builds.
    """

    def wants_dense(self, size: int, nnz: int) -> bool:
        return True


class SparseLU(AbstractLinearSolver):
    """SuperLU per batch element, refined; LSMR where it fails."""

    def wants_dense(self, size: int, nnz: int) -> bool:
        return False


@dataclass(frozen=True)
class AutoLinearSolver(AbstractLinearSolver):
    """Dense LU for small or dense systems, sparse LU otherwise.

    Dense batched LU has almost no per-element overhead, so it wins for small
    systems whatever their sparsity; above ``small`` unknowns it is used only if the
    matrix it would factor (J, or its Schur complement after eliminating defined
    variables) has at least ``density`` of its entries nonzero, and never above
    ``dense_max``. Measured (polishing, one thread): sparse LU is 1.6x and 1.9x faster
    on ℓ1 LPs of 400 and 800 unknowns at 13% density, 20x faster on an exponential-cone
    problem of 2,000 at 0.6%; dense LU is 1.4x and 1.35x faster on a robust regression
    (110 unknowns, 22%) and a portfolio SOCP (253, 21%), and 1.08x on that robust
    regression with its second-order cones lifted (112 unknowns, 12%: ``_kkt_lift``).

    Attributes:
        small: systems up to this size are always solved densely.
        density: nonzero fraction above which larger systems are solved densely.
        dense_max: largest system ever solved densely.
    """

    small: int = 128
    density: float = 0.15
    dense_max: int = 2000

    def wants_dense(self, size: int, nnz: int) -> bool:
        if size <= self.small:
            return True
        return size <= self.dense_max and nnz >= self.density * size * size


class FactorStore(Factorization):
    """Per batch element, the factorization to use and the element's index in it.

    Elements may come from different factorizations (polishing factors the elements
    still moving at each step); ``apply`` groups a request by factorization. It reports
    no method of its own: each element's is its owner's.
    """

    def __init__(self, batch: int) -> None:
        self.owner: list[Factorization | None] = [None] * batch
        self.local = np.zeros(batch, dtype=np.int64)

    def set(self, idx: np.ndarray, factors: Factorization) -> None:
        if isinstance(factors, FactorStore):  # keep one level: owners are factorizations
            self.adopt(idx, factors, np.arange(len(idx)))
            return
        for i, b in enumerate(idx):
            self.owner[b], self.local[b] = factors, i

    def adopt(self, idx: np.ndarray, other: FactorStore, source: np.ndarray | None = None) -> None:
        """Take ``other``'s entries ``source`` (default: ``idx``) for the elements ``idx``."""
        source = idx if source is None else source
        for b, o in zip(idx, source, strict=True):
            self.owner[b], self.local[b] = other.owner[o], other.local[o]

    def known(self) -> np.ndarray:
        return np.array([f is not None for f in self.owner], dtype=bool)

    def take(self, idx: np.ndarray) -> FactorStore:
        """The entries of the elements ``idx`` (known or not), as a store of their own."""
        out = FactorStore(len(idx))
        out.adopt(np.arange(len(idx)), self, idx)
        return out

    def apply(self, rhs, transpose, idx):
        out = np.empty_like(rhs)
        groups: dict[int, list[int]] = {}
        for pos, b in enumerate(idx):
            groups.setdefault(id(self.owner[b]), []).append(pos)
        for positions in groups.values():
            at = np.array(positions)
            factors = self.owner[idx[at[0]]]
            assert factors is not None
            out[at] = factors.apply(rhs[at], transpose, self.local[idx[at]])
        return out


def _norms(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)


def refine_solve(
    J: KKTMatrix, factors: Factorization, rhs: np.ndarray, transpose: bool,
    owner: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Solve J z = rhs by refinement on J_δ's factors.

    Args:
        J: the operator (it may differ slightly from the one factored).
        factors: the factorization to use.
        rhs: (B, N, K).
        transpose: solve with Jᵀ.
        owner: per element of J, its index in ``factors`` (default: the same index).

    Returns:
        z, per element whether it is accepted, its backward error and its step count.
    """
    owner = np.arange(J.batch) if owner is None else owner
    rhs_n = np.maximum(_norms(rhs), np.finfo(float).tiny)
    j_norm = J.norm()
    z = factors.apply(rhs, transpose, owner)
    steps = np.zeros(J.batch, dtype=np.int64)
    active = np.ones(J.batch, dtype=bool)
    err = rel = np.full(J.batch, np.inf)
    for _ in range(MAX_REFINE):
        res = rhs - J.matvec(z, transpose)
        last, rel = rel, _norms(res) / rhs_n
        err = rel * rhs_n / (j_norm * _norms(z) + rhs_n)
        # An element whose residual doubled is diverging (factors of a J too far from
        # this one): it stops there, before its iterates overflow, and is not accepted.
        active = np.isfinite(err) & (err > BACKWARD_TOL) & (rel < 2.0 * last)
        if not active.any():
            break
        idx = np.flatnonzero(active)
        z[idx] += factors.apply(res[idx], transpose, owner[idx])
        steps[idx] += 1
    ok = (np.isfinite(err) & (err <= ACCEPT_TOL) & (rel <= RESIDUAL_TOL)
          & (j_norm * _norms(z) <= MAX_CONDITION * rhs_n))
    return z, ok, err, steps


def least_squares(J: KKTMatrix, rhs: np.ndarray, transpose: bool, idx: np.ndarray) -> np.ndarray:
    """Minimum-norm least-squares solutions for the elements ``idx`` (the last resort):
    by a dense SVD (LAPACK ``gelsd``) up to ``DENSE_LSTSQ`` unknowns, by LSMR beyond."""
    out = np.zeros((idx.size, *rhs.shape[1:]))
    sub, rhs = J.take(idx), rhs[idx]
    if sub.is_dense or sub.size <= DENSE_LSTSQ:
        for i in range(idx.size):  # one dense matrix at a time (18 MB at 1,500)
            M = dense(sub.pattern, sub.values[i : i + 1])[0]
            out[i] = sla.lstsq(M.T if transpose else M, rhs[i], lapack_driver="gelsd")[0]
        return out
    for i, S in enumerate(sub.sparse_matrices()):
        Sb = sp.csc_array(S.T if transpose else S)
        out[i] = np.column_stack(
            [spla.lsmr(Sb, col, atol=1e-14, btol=1e-14, maxiter=20 * sum(Sb.shape))[0]
             for col in rhs[i].T]
        ).reshape(rhs[i].shape)
    return out
