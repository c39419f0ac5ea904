"""Derivatives of the cone-program solution map (framework-free)."""

from convexlayers.derivative._engine import SolutionDerivative
from convexlayers.derivative._linear import (
    AbstractLinearSolver,
    AutoLinearSolver,
    DenseLU,
    SolveReport,
    SparseLU,
)

__all__ = [
    "AbstractLinearSolver",
    "AutoLinearSolver",
    "DenseLU",
    "SolutionDerivative",
    "SolveReport",
    "SparseLU",
]
