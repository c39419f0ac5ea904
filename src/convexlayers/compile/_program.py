"""The compiled layer: θ ↦ cone-program data and cone solution ↦ outputs, built once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import cvxpy as cp
import numpy as np
import scipy.sparse as sp

from convexlayers.compile._canon import canonicalize
from convexlayers.compile._checks import check_parameters, check_problem, resolve_outputs
from convexlayers.compile._data import DataMap, build_data_map
from convexlayers.compile._params import (
    ParamSpec,
    logged_parameter_ids,
    param_specs,
    reduced_parameter_maps,
)
from convexlayers.compile._retrieval import OutputSpec, build_retrieval
from convexlayers.cones import ConeDims


def vec_f(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, *shape) -> (B, size), each element flattened in column-major order."""
    batch = values.shape[0]
    axes = (0, *range(values.ndim - 1, 0, -1))
    return np.transpose(values, axes).reshape(batch, int(np.prod(shape, dtype=int)))


def unvec_f(flat: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, size) -> (B, *shape), the inverse of :func:`vec_f`."""
    batch = flat.shape[0]
    arr = flat.reshape((batch, *shape[::-1]))
    return np.transpose(arr, (0, *range(arr.ndim - 1, 0, -1)))


@dataclass(frozen=True)
class ParametricConeProgram:
    """A CVXPY problem compiled for one family of solvers.

    Attributes:
        parameters: the layer's inputs, in order.
        outputs: the layer's outputs, in order.
        data: θ ↦ (P, q, A, b), batched, with its adjoint.
        R: (outputs, n + m) sparse map from (x, y) to the stacked outputs.
        exp_mask: output entries that are exp(R z) (primal variables with gp=True).
    """

    parameters: tuple[ParamSpec, ...]
    outputs: tuple[OutputSpec, ...]
    data: DataMap
    R: sp.csr_array
    exp_mask: np.ndarray

    @property
    def n(self) -> int:
        return self.data.n

    @property
    def m(self) -> int:
        return self.data.m

    def outputs_from(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """(B, n), (B, m) -> (B, outputs) stacked outputs."""
        z = np.concatenate([x, y], axis=1)
        out = (self.R @ z.T).T
        out[:, self.exp_mask] = np.exp(out[:, self.exp_mask])
        return out

    @cached_property
    def _R_t(self) -> sp.csr_array:
        """Rᵀ in CSR, made once."""
        return self.R.T.tocsr()

    def outputs_vjp(self, out: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cotangent of the stacked outputs -> cotangents of x and y."""
        g = np.where(self.exp_mask, g * out, g)
        gz = (self._R_t @ g.T).T
        return gz[:, : self.n], gz[:, self.n :]

    def outputs_jvp(self, out: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
        dout = (self.R @ np.concatenate([dx, dy], axis=1).T).T
        return np.where(self.exp_mask, dout * out, dout)


def compile_problem(
    problem: cp.Problem,
    parameters: Sequence[cp.Parameter],
    variables: Sequence[cp.Variable] | None,
    *,
    gp: bool,
    quadratic: bool,
    cones: frozenset[str],
    solver: str,
) -> ParametricConeProgram:
    """Check and canonicalize ``problem``; build the affine maps in and out.

    Args:
        problem: a DPP problem (DGP-DPP with ``gp``).
        parameters: exactly the problem's parameters, in the order the layer takes them.
        variables: problem variables and/or constraint dual variables to output
            (None: every variable of the problem).
        gp: parse as a log-log convex program.
        quadratic: the target solver takes a quadratic objective.
        cones: the cone kinds the target solver supports.
        solver: the target solver's name, for error messages.

    Raises:
        ProblemError: if the problem, parameters or variables cannot make a layer.
    """
    check_problem(problem, gp, quadratic)
    params = check_parameters(problem, parameters)
    refs = resolve_outputs(problem, variables)
    canon = canonicalize(problem, gp, quadratic, cones, solver)
    prog = canon.param_prog
    dims = ConeDims(
        zero=prog.cone_dims.zero,
        nonneg=prog.cone_dims.nonneg,
        soc=prog.cone_dims.soc,
        psd=prog.cone_dims.psd,
        exp=prog.cone_dims.exp,
        power=prog.cone_dims.p3d,
    )
    specs = param_specs(params, logged_parameter_ids(canon.reductions))
    L_lin, L_log = reduced_parameter_maps(params, specs, canon.reductions, prog)
    log_mask = np.zeros(sum(s.size for s in specs), dtype=bool)
    for s in specs:
        log_mask[s.offset : s.offset + s.size] = s.logged
    data = build_data_map(prog, dims, L_lin, L_log, log_mask)
    outputs, R = build_retrieval(canon, refs, gp)
    exp_mask = np.zeros(R.shape[0], dtype=bool)
    for o in outputs:
        exp_mask[o.offset : o.offset + o.size] = o.exp
    return ParametricConeProgram(
        parameters=specs,
        outputs=outputs,
        data=data,
        R=R,
        exp_mask=exp_mask,
    )
