"""Per-call diagnostics exposed by every layer as ``layer.info``.

A call's diagnostics travel with its results: the forward pass returns them as
one small array per batch element (so that they can ride along with the solver
state through any framework's autodiff and compiler), and the backward pass
rebuilds them from that array and adds its own. ``layer.info`` is then the
complete, internally consistent record of the last call that finished.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from convexlayers.solvers._base import SolverStatus

_STATUSES = tuple(SolverStatus)
# Columns of the per-element diagnostics array: status code, iterations, seconds, residual,
# and whether NATIVE ran (the automatic choice may pick it where the layer names Clarabel).
INFO_WIDTH = 5


@dataclass(frozen=True)
class DerivativeInfo:
    """How the derivative system of each batch element was solved.

    Attributes:
        method: per element, "lu" (dense), "sparse_lu", "lstsq" (the system was
            singular: least-squares, minimum-norm solution), or "none" (the element
            has no solution, so its gradient is zero).
        residual: per element, relative residual ||J z − r|| / ||r|| of that solve.
            Large values mean the derivative is not well defined at this solution
            (non-unique or degenerate); the gradient is then a least-squares estimate.
        kkt_residual: per element, the relative KKT residual of the point the derivative
            was taken at (after polishing).
        refinements: per element, iterative-refinement steps of that solve (0 for least
            squares or no solve).
    """

    method: tuple[str, ...]
    residual: np.ndarray
    kkt_residual: np.ndarray
    refinements: np.ndarray | None = None


@dataclass(frozen=True)
class SolveInfo:
    """Diagnostics of one call of a layer.

    Attributes:
        solver: the backend used.
        status: per batch element, the solver status.
        iterations: per batch element, solver iterations.
        solve_time: per batch element, seconds in the solver.
        residual: per batch element, the relative KKT residual of the returned solution,
            ||W N(x, y − s)|| / (1 + ||W q|| + ||W b||) with N the normal map and W
            weights that equilibrate the data to order one (NaN if unsolved; see
            ``convexlayers.derivative.kkt_residual``).
            Gradients are about as accurate as this is small.
        derivative: filled in by the backward (or forward-mode) pass of this call, else None.
    """

    solver: str
    status: tuple[SolverStatus, ...]
    iterations: np.ndarray
    solve_time: np.ndarray
    residual: np.ndarray
    derivative: DerivativeInfo | None = None

    @property
    def ok(self) -> bool:
        """Every element solved to full accuracy."""
        return all(s is SolverStatus.OPTIMAL for s in self.status)

    @property
    def failed(self) -> tuple[int, ...]:
        """Batch indices of the elements without a solution (NaN outputs, zero gradients)."""
        return tuple(b for b, st in enumerate(self.status) if not st.has_iterate)

    def to_array(self) -> np.ndarray:
        """(B, INFO_WIDTH) float64: what travels from the forward to the backward pass."""
        codes = [_STATUSES.index(s) for s in self.status]
        native = np.full(len(codes), float(self.solver == "NATIVE"))
        cols = (codes, self.iterations, self.solve_time, self.residual, native)
        return np.stack([np.asarray(c, dtype=np.float64).reshape(-1) for c in cols], axis=1)

    @staticmethod
    def from_array(solver: str, array: np.ndarray) -> SolveInfo:
        """The inverse of :meth:`to_array`; ``solver``: the layer's backend, unless the
        array says that the automatic choice ran NATIVE."""
        array = np.asarray(array, dtype=np.float64).reshape(-1, INFO_WIDTH)
        return SolveInfo(
            solver="NATIVE" if array[:, 4].any() else solver,
            status=tuple(_STATUSES[int(c)] for c in array[:, 0]),
            iterations=array[:, 1].astype(np.int64),
            solve_time=array[:, 2].copy(),
            residual=array[:, 3].copy(),
        )

    def with_derivative(self, derivative: DerivativeInfo) -> SolveInfo:
        return replace(self, derivative=derivative)

