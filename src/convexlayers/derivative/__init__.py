"""Derivatives of the cone-program solution map (framework-free)."""

from convexlayers.derivative._engine import SolutionDerivative
from convexlayers.derivative._linear import (
    AbstractLinearSolver,
    AutoLinearSolver,
    DenseLU,
    FactorStore,
    KKTMatrix,
    SolveReport,
    SparseLU,
)
from convexlayers.derivative._refine import kkt_residual, normal_residual, refine

__all__ = [
    "AbstractLinearSolver",
    "AutoLinearSolver",
    "DenseLU",
    "FactorStore",
    "KKTMatrix",
    "SolutionDerivative",
    "SolveReport",
    "SparseLU",
    "kkt_residual",
    "normal_residual",
    "refine",
]
