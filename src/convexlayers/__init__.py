"""convexlayers: differentiable convex optimization layers.

Framework layers live in ``convexlayers.torch``, ``convexlayers.jax``,
``convexlayers.tensorflow`` and ``convexlayers.mlx``; this package exposes the
framework-free pieces.
"""

from convexlayers._core import DerivativeInfo, SolveInfo
from convexlayers._core._executor import ChunkedExecutor, RayExecutor
from convexlayers._errors import (
    ConvexLayersError,
    ConvexLayersWarning,
    ExecutorError,
    InaccurateSolutionWarning,
    ParameterError,
    ProblemError,
    SolverArgumentError,
    SolverError,
)
from convexlayers.solvers import available_solvers
from convexlayers.solvers._base import SolverStatus

__version__ = "0.1.0"

__all__ = [
    "ChunkedExecutor",
    "ConvexLayersError",
    "ConvexLayersWarning",
    "DerivativeInfo",
    "ExecutorError",
    "InaccurateSolutionWarning",
    "ParameterError",
    "ProblemError",
    "RayExecutor",
    "SolveInfo",
    "SolverArgumentError",
    "SolverError",
    "SolverStatus",
    "__version__",
    "available_solvers",
]
