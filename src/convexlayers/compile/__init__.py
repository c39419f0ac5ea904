"""CVXPY problem -> parametric cone program (framework-free)."""

from convexlayers.compile._checks import OutputRef
from convexlayers.compile._data import DataMap, SparsePattern
from convexlayers.compile._params import ParamSpec
from convexlayers.compile._program import (
    ParametricConeProgram,
    compile_problem,
    unvec_f,
    vec_f,
)
from convexlayers.compile._retrieval import OutputSpec

__all__ = [
    "DataMap",
    "OutputRef",
    "OutputSpec",
    "ParamSpec",
    "ParametricConeProgram",
    "SparsePattern",
    "compile_problem",
    "unvec_f",
    "vec_f",
]
