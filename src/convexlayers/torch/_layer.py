"""``CvxpyLayer`` for PyTorch."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import cvxpy as cp
import torch

from convexlayers._core import SolutionMap, SolveInfo
from convexlayers._errors import ParameterError, SolverArgumentError
from convexlayers.derivative import AbstractLinearSolver
from convexlayers.torch._ops import register, solve_op


class CvxpyLayer(torch.nn.Module):
    """A differentiable convex optimization layer.

    The forward pass solves the problem for the given parameter values (a batch
    at once); the backward pass differentiates the solution with respect to them.

    Args:
        problem: a CVXPY problem that is DPP (``problem.is_dpp()``), or with
            ``gp=True`` log-log convex and DPP (``problem.is_dgp(dpp=True)``).
        parameters: the problem's parameters, in the order the layer takes values.
        variables: the outputs: problem variables and/or constraint dual variables
            (``constraint.dual_variables[0]``). Default: every problem variable.
        gp: parse the problem as a log-log convex program.
        solver: "CLARABEL" (default), "SCS" or "ECOS".
        solver_args: default solver settings; a call's ``solver_args`` override them.
        linear_solver: strategy for the derivative's linear systems (default: dense LU
            for small systems, sparse LU for large ones).
        refine: polish solutions with damped Newton steps on the KKT conditions, for
            outputs and gradients accurate to near machine precision (a few extra linear
            solves). "auto" (default): only inaccurate solves (KKT residual > 1e-9);
            True: every solve; False: never.

    Example:
        >>> import cvxpy as cp, torch
        >>> x = cp.Variable(2); A = cp.Parameter((3, 2)); b = cp.Parameter(3)
        >>> prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b)), [x >= 0])
        >>> layer = CvxpyLayer(prob, parameters=[A, b], variables=[x])
        >>> sol, = layer(torch.ones(3, 2), torch.ones(3))
        >>> sol.shape
        torch.Size([2])
    """

    def __init__(
        self,
        problem: cp.Problem,
        parameters: Sequence[cp.Parameter],
        variables: Sequence[cp.Variable] | None = None,
        gp: bool = False,
        solver: str | None = None,
        solver_args: Mapping[str, Any] | None = None,
        linear_solver: AbstractLinearSolver | None = None,
        refine: bool | str = "auto",
    ) -> None:
        super().__init__()
        self._map = SolutionMap(
            problem,
            parameters,
            variables,
            gp=gp,
            solver=solver,
            solver_args=solver_args,
            linear_solver=linear_solver,
            refine=refine,
        )
        self._handle = register(self._map, self)

    @property
    def info(self) -> SolveInfo | None:
        """Diagnostics of the last call: per-element status, iterations, times, residuals."""
        return self._map.info

    def forward(
        self, *params: torch.Tensor, solver_args: Mapping[str, Any] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """Solve for the given parameter values.

        Args:
            *params: one tensor per parameter, of the parameter's shape or with a leading
                batch dimension.
            solver_args: settings for this call (e.g. ``{"eps": 1e-8}`` or
                ``{"solve_method": "ECOS"}``).

        Returns:
            One tensor per requested variable, in the dtype and on the device of the inputs,
            with a leading batch dimension if any input had one.
        """
        self._map.batch_spec([None if p is None else tuple(p.shape) for p in params])
        self._map.backend(solver_args)  # validate before any work
        tensors = [p if isinstance(p, torch.Tensor) else torch.as_tensor(p) for p in params]
        dtype, device = _common_dtype_device(tensors)
        cpu = [t.to(device="cpu", dtype=torch.float64) for t in tensors]
        results = solve_op(cpu, self._handle, _encode(solver_args))
        return tuple(r.to(device=device, dtype=dtype) for r in results[: len(self._map.outputs)])


def _common_dtype_device(tensors: Sequence[torch.Tensor]) -> tuple[torch.dtype, torch.device]:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ParameterError(
            f"parameters: tensors are on different devices {sorted(map(str, devices))}; "
            "move them to one device."
        )
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    dtype = floats[0] if floats else torch.get_default_dtype()
    for other in floats[1:]:
        dtype = torch.promote_types(dtype, other)
    device = devices.pop() if devices else torch.device("cpu")
    return dtype, device


def _encode(solver_args: Mapping[str, Any] | None) -> str:
    """Per-call solver settings as a JSON string, the form a custom op can take."""
    if not solver_args:
        return "{}"
    try:
        return json.dumps(dict(solver_args), sort_keys=True)
    except TypeError as err:
        raise SolverArgumentError(
            f"solver_args: values must be plain numbers, strings or booleans ({err})."
        ) from err
