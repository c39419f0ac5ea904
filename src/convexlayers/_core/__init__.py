"""Framework-neutral layer core shared by the PyTorch, JAX and TensorFlow adapters."""

from convexlayers._core._batch import BatchSpec
from convexlayers._core._info import DerivativeInfo, SolveInfo
from convexlayers._core._solution_map import STATE_SIZE, Solution, SolutionMap

__all__ = ["STATE_SIZE", "BatchSpec", "DerivativeInfo", "Solution", "SolutionMap", "SolveInfo"]
