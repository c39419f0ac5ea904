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
import scipy.sparse as sp

from convexlayers.cones import ConeJacobian, dual_projection_jacobian
from convexlayers.derivative._linear import AbstractLinearSolver, AutoLinearSolver, SolveReport
from convexlayers.derivative._structure import Structure, a_matvec, a_rmatvec, p_matvec


class SolutionDerivative:
    """JVP and VJP of (P, q, A, b) ↦ (x, y, s) at a batch of solutions.

    Build it once after a forward solve; J is assembled on first use and reused
    by later products. After each product, ``report`` says how J was solved.

    Args:
        structure: data layout (the compiled program's ``DataMap``).
        data: (B, nd) program data of each element.
        x, y, s: (B, n), (B, m), (B, m) primal-dual solutions.
        linear_solver: strategy for the J systems (default :class:`AutoLinearSolver`).
    """

    def __init__(
        self,
        structure: Structure,
        data: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        s: np.ndarray,
        linear_solver: AbstractLinearSolver | None = None,
    ) -> None:
        self.structure = structure
        self.x, self.y, self.s = x, y, s
        self.linear_solver = linear_solver or AutoLinearSolver()
        self._D: ConeJacobian = dual_projection_jacobian(structure.dims, y - s)
        self._p_vals, _, self._a_vals, _ = structure.split(data)
        self._J: np.ndarray | list[sp.csc_array] | None = None
        self.report: SolveReport | None = None

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def _nnz(self) -> int:
        """Estimated nonzeros of J: P twice, A, D, and D A (blocks of D mix A's rows)."""
        st = self.structure
        per_row = np.bincount(st.A.rows, minlength=st.m)
        cum = np.concatenate([[0], np.cumsum(per_row)])
        starts = np.array([offset for offset, _ in self._D.blocks], dtype=np.int64)
        sizes = np.array([block.shape[-1] for _, block in self._D.blocks], dtype=np.int64)
        mixed = int((sizes * (cum[starts + sizes] - cum[starts])).sum())
        diag_rows = st.dims.zero + st.dims.nonneg
        nnz_p = 0 if st.P is None else 2 * st.P.rows.size
        return nnz_p + st.A.rows.size + int(cum[diag_rows]) + mixed + int((sizes**2).sum()) + st.m

    def _assemble(self) -> np.ndarray | list[sp.csc_array]:
        st, N = self.structure, self.structure.n + self.structure.m
        if self.linear_solver.wants_dense(N, self._nnz()):
            J = np.zeros((self.batch, N, N))
            A = np.zeros((self.batch, st.m, st.n))
            A[:, st.A.rows, st.A.cols] = self._a_vals
            if st.P is not None:
                J[:, st.P.rows, st.P.cols] = self._p_vals
                J[:, st.P.cols, st.P.rows] = self._p_vals
            J[:, : st.n, st.n :] = np.swapaxes(self._D.matvec(A), 1, 2)  # (D A)ᵀ = Aᵀ D
            J[:, st.n :, : st.n] = A
            J[:, st.n :, st.n :] = self._D.dense()
            J[:, np.arange(st.n, N), np.arange(st.n, N)] -= 1.0
            return J
        blocks = []
        for b in range(self.batch):
            A = st.A.matrix(self._a_vals[b])
            D = self._D.sparse(b)
            if st.P is None:
                P = sp.csc_array((st.n, st.n))
            else:
                U = st.P.matrix(self._p_vals[b])
                P = U + U.T - sp.diags_array(U.diagonal())
            blocks.append(
                sp.block_array([[P, (D @ A).T], [A, D - sp.eye_array(st.m)]], format="csc")
            )
        return blocks

    def solve(self, rhs: np.ndarray, transpose: bool = False) -> np.ndarray:
        """Solve J z = rhs (or Jᵀ z = rhs) for a batch ``rhs`` of shape (B, n + m)."""
        if self._J is None:
            self._J = self._assemble()
        z, self.report = self.linear_solver.solve(self._J, rhs[..., None], transpose)
        return z[..., 0]

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
