"""Derivative of the cone-program solution map (P, q, A, b) ↦ (x, y, s).

With v = y − s, the solution satisfies y = Π_{K*}(v), s = Π_K(−v) and the
normal-map equations (Busseti, Moursi, Boyd 2019; Agrawal et al. 2019, with P)

    N(x, v) = [ P x + Aᵀ Π_{K*}(v) + q ;  A x + Π_{K*}(v) − v − b ] = 0.

Differentiating, with D = DΠ_{K*}(v) (symmetric, block diagonal):

    J = ∂N/∂(x, v) = [[P, Aᵀ D], [A, D − I]],
    J [dx; dv] = −[dP x + dAᵀ y + dq ;  dA x − db],   dy = D dv,   ds = dy − dv.

Reverse mode is the transpose: with [u; w] = J⁻ᵀ [gx; D(gy + gs) − gs],

    gq = −u,   gb = w,   gA = −(y uᵀ + w xᵀ),   gP = −½(u xᵀ + x uᵀ),

evaluated only on the sparsity patterns of P (upper triangle) and A.
"""

from __future__ import annotations

import numpy as np

from convexlayers.cones import ConeJacobian, dual_projection_jacobian
from convexlayers.derivative._kkt import kkt_pattern, kkt_values
from convexlayers.derivative._kkt_lift import LIFT_MIN
from convexlayers.derivative._linear import (
    AbstractLinearSolver,
    AutoLinearSolver,
    FactorStore,
    KKTMatrix,
    SolveReport,
    least_squares,
    refine_solve,
)
from convexlayers.derivative._structure import Structure, a_matvec, a_rmatvec, p_matvec


class SolutionDerivative:
    """JVP and VJP of (P, q, A, b) ↦ (x, y, s) at a batch of solutions.

    J is assembled at construction (one gather for the whole batch) and factored at
    most once per element, on first use: every later product reuses the factors. Given
    ``factors`` of a nearby point (the last step of polishing), it tries those first,
    refining against this J, and factors afresh only the elements where that fails.
    After each product, ``report`` says how J was solved.

    Args:
        structure: data layout (the compiled program's ``DataMap``).
        data: (B, nd) program data of each element.
        x, y, s: (B, n), (B, m), (B, m) primal-dual solutions.
        linear_solver: strategy for the J systems (default :class:`AutoLinearSolver`).
        factors: factorizations to try first, per element (e.g. from polishing).
    """

    def __init__(
        self,
        structure: Structure,
        data: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        s: np.ndarray,
        linear_solver: AbstractLinearSolver | None = None,
        factors: FactorStore | None = None,
    ) -> None:
        self.structure = structure
        self.x, self.y, self.s = x, y, s
        self.linear_solver = linear_solver or AutoLinearSolver()
        self._D: ConeJacobian = dual_projection_jacobian(structure.dims, y - s,
                                                         low_rank_from=LIFT_MIN)
        p_vals, _, a_vals, _ = structure.split(data)
        pattern = kkt_pattern(structure, self._D)
        values = kkt_values(pattern, None if structure.P is None else p_vals, a_vals, self._D)
        dense = self.linear_solver.wants_dense(*pattern.factored)
        self.J = KKTMatrix(pattern, values, dense)
        self.store = FactorStore(self.batch)
        self._tried = factors
        self.report: SolveReport | None = None

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def _refresh(self, idx: np.ndarray) -> None:
        """Factor J afresh for the elements ``idx``."""
        if idx.size:
            self.store.set(idx, self.linear_solver.factor(self.J.take(idx)))

    def solve(self, rhs: np.ndarray, transpose: bool = False) -> np.ndarray:
        """Solve J z = rhs (or Jᵀ z = rhs) for a batch ``rhs`` of shape (B, n + m)
        (through the lifted J̃ (z, ζ) = (rhs, 0) where J has new unknowns ζ)."""
        size = rhs.shape[1]
        r = np.zeros((self.batch, self.J.size, 1))
        r[:, :size, 0] = rhs
        reused = np.zeros(self.batch, dtype=bool)
        if self._tried is not None:  # factors from polishing: keep those that work here
            reused = self._tried.known()
            self.store.adopt(np.flatnonzero(reused), self._tried)
            self._tried = None
        self._refresh(np.flatnonzero(~self.store.known()))
        z, ok, err, steps = refine_solve(self.J, self.store, r, transpose)
        retry = np.flatnonzero(~ok & reused)
        if retry.size:  # maybe factors of another point: factor this J and try again
            self._refresh(retry)
            z[retry], ok[retry], err[retry], steps[retry] = refine_solve(
                self.J.take(retry), self.store, r[retry], transpose, owner=retry
            )
        method = [getattr(f, "method", "lstsq") for f in self.store.owner]
        bad = np.flatnonzero(~ok)
        if bad.size:
            z[bad] = least_squares(self.J, r, transpose, bad)
            steps[bad] = 0
            for b in bad:
                method[b] = "lstsq"
        residual = _norms(r - self.J.matvec(z, transpose)) / np.maximum(
            _norms(r), np.finfo(float).tiny)
        self.report = SolveReport(tuple(method), residual, steps)
        return z[:, :size, 0]

    def jvp(self, ddata: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tangent (B, nd) of the data -> tangents (dx, dy, ds)."""
        st = self.structure
        dp, dq, da, db = st.split(ddata)
        r1 = dq + a_rmatvec(st, da, self.y) + p_matvec(st, dp, self.x)
        r2 = a_matvec(st, da, self.x) - db
        z = self.solve(-np.concatenate([r1, r2], axis=1))
        dx, dv = z[:, : st.n], z[:, st.n :]
        dy = self._D.matvec(dv)
        return dx, dy, dy - dv

    def vjp(self, gx: np.ndarray, gy: np.ndarray, gs: np.ndarray) -> np.ndarray:
        """Cotangents of (x, y, s) -> cotangent (B, nd) of the data."""
        st = self.structure
        gv = self._D.matvec(gy + gs) - gs
        z = self.solve(np.concatenate([gx, gv], axis=1), transpose=True)
        u, w = z[:, : st.n], z[:, st.n :]
        r, c = st.A.rows, st.A.cols
        ga = -(self.y[:, r] * u[:, c] + w[:, r] * self.x[:, c])
        parts = []
        if st.P is not None:
            i, j = st.P.rows, st.P.cols
            gp = -(u[:, i] * self.x[:, j] + u[:, j] * self.x[:, i])
            parts.append(np.where(i == j, 0.5 * gp, gp))
        return np.concatenate([*parts, -u, ga, w], axis=1)


def _norms(a: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a.reshape(a.shape[0], -1), axis=1)
