"""How a layer differentiates its solution: the adjoint strategy, as an object.

A layer asks its adjoint two things: to turn the solver's point into the point the
layer returns (``improve``), and to linearize the solution map there (``linearize``).
:class:`ImplicitAdjoint` does both on the KKT normal map: Newton steps polish, implicit
differentiation linearizes, and the factorization of the last Newton step is reused by
the derivative. Other strategies (one that reuses a native solver's own KKT
factorization, a smoothed one) implement the same two methods; nothing else in a layer
changes (the pattern of optimistix's ``ImplicitAdjoint``).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from convexlayers._errors import SolverArgumentError
from convexlayers.derivative._engine import SolutionDerivative
from convexlayers.derivative._linear import AbstractLinearSolver, AutoLinearSolver, FactorStore
from convexlayers.derivative._refine import normal_residual, refine, relative, rows, weights
from convexlayers.derivative._structure import Structure

# A solution whose relative KKT residual exceeds this is inaccurate: polished where
# polishing is on, re-solved tighter if polishing cannot reach it, reported if nothing can.
KKT_TARGET = 1e-9
_POLISH = (True, False, "derivative")


@dataclass(frozen=True)
class Polished:
    """A batch of points after polishing.

    Attributes:
        x, y, s: the points (unpolished elements unchanged).
        residual: their relative KKT residuals (NaN where unsolved).
        factors: per element, the factorization of its last Newton step, if any.
    """

    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    residual: np.ndarray
    factors: FactorStore


class AbstractAdjoint(abc.ABC):
    """A derivative strategy: what point a layer returns, and how it is differentiated.

    Attributes:
        target: relative KKT residual above which a point counts as inaccurate.
    """

    target: float = KKT_TARGET

    @property
    def polishes_outputs(self) -> bool:
        """The outputs a layer returns are the polished points, not the solver's own."""
        return False

    @abc.abstractmethod
    def improve(self, st: Structure, data: np.ndarray, x: np.ndarray, y: np.ndarray,
                s: np.ndarray, threshold: float = 0.0) -> Polished:
        """Improve the elements whose relative KKT residual exceeds ``threshold``.

        Unsolved elements (NaN) are left alone. The arrays are not modified.
        """

    @abc.abstractmethod
    def linearize(self, st: Structure, data: np.ndarray, x: np.ndarray, y: np.ndarray,
                  s: np.ndarray, factors: FactorStore | None = None) -> SolutionDerivative:
        """The derivative of the solution map at (x, y, s), reusing ``factors`` if given."""


@dataclass(frozen=True)
class ImplicitAdjoint(AbstractAdjoint):
    """Implicit differentiation of the KKT conditions at a polished solution.

    An interior-point solution stops at a gap of ~1e-8: its outputs are accurate to
    ~1e-5 on some cones, and near a weakly active constraint its derivative can be off
    by O(1) (the point sits on the wrong side). Semismooth Newton steps on the normal
    map (:func:`convexlayers.derivative.refine`) reach the exact solution, ~1e-15,
    and the derivative reuses the last step's factorization of J.

    Args:
        linear_solver: how J is factored (dense batched or sparse per element).
        polish: ``True`` (default): outputs and derivatives at the polished solution,
            so outputs are exact and agree with their gradients (``gradcheck`` passes);
            ``"derivative"``: outputs stay the solver's, derivatives are taken at the
            polished solution of inaccurate elements; ``False``: the solver's point for
            both (no polishing at all).
        target: relative KKT residual a polished solution must reach; a layer re-solves
            elements that do not at a tighter tolerance, and reports them if that fails.

    Example:
        >>> from convexlayers.derivative import ImplicitAdjoint, SparseLU
        >>> ImplicitAdjoint(linear_solver=SparseLU(), polish="derivative").polish
        'derivative'
    """

    linear_solver: AbstractLinearSolver = field(default_factory=AutoLinearSolver)
    polish: bool | str = True
    target: float = KKT_TARGET

    def __post_init__(self) -> None:
        if self.polish not in _POLISH:
            raise SolverArgumentError(
                f"adjoint: polish must be True, False or 'derivative', received "
                f"{self.polish!r}."
            )
        if not isinstance(self.linear_solver, AbstractLinearSolver):
            raise SolverArgumentError(
                "adjoint: linear_solver must be an AbstractLinearSolver (DenseLU(), "
                f"SparseLU(), AutoLinearSolver()), received {type(self.linear_solver).__name__}."
            )
        if not (isinstance(self.target, float | int) and 0 < self.target < 1):
            raise SolverArgumentError(
                f"adjoint: target must be a number in (0, 1), received {self.target!r}."
            )

    @property
    def polishes_outputs(self) -> bool:
        return self.polish is True

    def improve(self, st, data, x, y, s, threshold=0.0):
        x, y, s = x.copy(), y.copy(), s.copy()
        residual = np.full(x.shape[0], np.nan)
        N = np.full((x.shape[0], st.n + st.m), np.nan)
        solved = np.flatnonzero(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
        d, xs, ys, ss = rows(solved, data, x, y, s)
        N[solved] = normal_residual(st, d, xs, ys - ss)
        w, scale, sigma = weights(st, data)
        residual[solved] = relative(N[solved], w[solved], scale[solved])
        store = FactorStore(x.shape[0])
        todo = np.flatnonzero(residual > threshold)  # NaN (unsolved) compares False
        if self.polish is not False and todo.size:
            d, xs, ys, ss = rows(todo, data, x, y, s)
            x[todo], y[todo], s[todo], factors, residual[todo] = refine(
                st, d, xs, ys, ss, self.linear_solver, start=N[todo],
                weighted=(w[todo], scale[todo], sigma[todo]))
            store.adopt(todo, factors, np.arange(todo.size))
        return Polished(x, y, s, residual, store)

    def linearize(self, st, data, x, y, s, factors=None):
        return SolutionDerivative(st, data, x, y, s, linear_solver=self.linear_solver,
                                  factors=factors)
