"""Derivatives of the cone-program solution map (framework-free)."""

from convexlayers.derivative._adjoint import (
    KKT_TARGET,
    AbstractAdjoint,
    ImplicitAdjoint,
    Polished,
)
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
    "KKT_TARGET",
    "AbstractAdjoint",
    "AbstractLinearSolver",
    "AutoLinearSolver",
    "DenseLU",
    "FactorStore",
    "ImplicitAdjoint",
    "KKTMatrix",
    "Polished",
    "SolutionDerivative",
    "SolveReport",
    "SparseLU",
    "kkt_residual",
    "normal_residual",
    "refine",
]
