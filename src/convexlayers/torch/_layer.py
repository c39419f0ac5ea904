"""``CvxpyLayer`` for PyTorch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cvxpy as cp
import torch

from convexlayers._core import SolutionMap, SolveInfo
from convexlayers._core._executor import HasExecutor
from convexlayers._core._report import check_on_failure, check_warm_start
from convexlayers._errors import ParameterError, SolverArgumentError
from convexlayers.derivative import AbstractAdjoint, AbstractLinearSolver
from convexlayers.torch._ops import encode, register, solve_op


class CvxpyLayer(torch.nn.Module, HasExecutor):
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
        solver: None (default: NATIVE on batches of dense LPs/QPs, else CLARABEL; see
            the manual), "CLARABEL", "SCS", "ECOS" or "NATIVE".
        solver_args: default solver settings; a call's ``solver_args`` override them.
        linear_solver: shorthand for ``adjoint=ImplicitAdjoint(linear_solver=...)``.
        refine: shorthand kept from 0.1: True, "auto" or False is
            ``adjoint=ImplicitAdjoint(polish=True / "derivative" / False)``.
        on_failure: "raise" (default): a call raises ``SolverError`` when some batch
            elements have no solution; "nan": those elements get NaN outputs and zero
            gradients, the rest of the batch is solved and differentiated as usual, and
            ``layer.info.failed`` lists them. A call's ``on_failure`` overrides it.
        adjoint: the derivative strategy (default ``ImplicitAdjoint()`` from
            ``convexlayers.derivative``: outputs polished to the exact solution by Newton
            steps on the KKT conditions, so that they agree with their gradients; the
            backward pass reuses the last step's factorization).
        executor: solve batches larger than one chunk on a ``concurrent.futures.Executor``
            (a process pool, a Dask or Ray cluster), forward and backward;
            ``convexlayers.ChunkedExecutor(executor, chunk_size, timeout)`` tunes it.
            Settable later as ``layer.executor``; not pickled or copied with the layer.

    The layer pickles and deep-copies (``torch.save(model)``, ``copy.deepcopy``); one
    layer may be called from several threads at once.

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
        refine: bool | str | None = None,
        on_failure: str = "raise",
        adjoint: AbstractAdjoint | None = None,
        executor: Any = None,
    ) -> None:
        super().__init__()
        self._info: SolveInfo | None = None
        self._map = SolutionMap(
            problem,
            parameters,
            variables,
            gp=gp,
            solver=solver,
            solver_args=solver_args,
            linear_solver=linear_solver,
            refine=refine,
            on_failure=on_failure,
            adjoint=adjoint,
            executor=executor,
        )
        self._handle = register(self)

    @property
    def info(self) -> SolveInfo | None:
        """Diagnostics of the last finished call (forward, or backward with its forward):
        per-element status, iterations, times, residuals, and the derivative's."""
        return self._info

    def _record(self, info: SolveInfo) -> None:
        self._info = info

    def __getstate__(self) -> dict[str, Any]:
        # The handle names this instance in the op registry; a copy registers itself.
        state = super().__getstate__()
        state.pop("_handle", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._handle = register(self)

    def forward(
        self,
        *params: torch.Tensor,
        solver_args: Mapping[str, Any] | None = None,
        on_failure: str | None = None,
        warm_start: bool = False,
    ) -> tuple[torch.Tensor, ...]:
        """Solve for the given parameter values.

        Args:
            *params: one tensor per parameter, of the parameter's shape or with a leading
                batch dimension.
            solver_args: settings for this call (e.g. ``{"eps": 1e-8}`` or
                ``{"solve_method": "ECOS"}``).
            on_failure: "raise" or "nan" for this call (default: the layer's).
            warm_start: start SCS or NATIVE from this layer's previous solution, element
                by element (a cold start if that call had another batch size); the
                answer is the same to the tolerance, often in fewer iterations.

        Returns:
            One tensor per requested variable, in the dtype and on the device of the inputs,
            with a leading batch dimension if any input had one.
        """
        tensors = _tensors(self._map, params)
        self._map.batch_spec([tuple(t.shape) for t in tensors])
        self._map.backend(solver_args)  # validate before any work
        options = _encode(solver_args, on_failure, check_warm_start(warm_start))
        dtype, device = _common_dtype_device(self._map, params, tensors)
        cpu = [t.to(device="cpu", dtype=torch.float64) for t in tensors]
        results = solve_op(cpu, self._handle, options)
        return tuple(r.to(device=device, dtype=dtype) for r in results[: len(self._map.outputs)])


def _tensors(smap: SolutionMap, params: Sequence[Any]) -> list[torch.Tensor]:
    """Parameter values as real tensors (Python numbers and nested lists accepted)."""
    if len(params) != len(smap.parameters):
        smap.batch_spec([()] * len(params))  # the count error
    tensors = []
    for spec, p in zip(smap.parameters, params, strict=True):
        if p is None:
            raise ParameterError(
                f"parameter {spec.label}: received None; pass a tensor of shape {spec.shape}."
            )
        try:
            t = p if isinstance(p, torch.Tensor) else torch.as_tensor(p)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ParameterError(
                f"parameter {spec.label}: expected a tensor or array of numbers, received "
                f"{type(p).__name__} ({err})."
            ) from err
        if t.is_complex() or not (t.is_floating_point() or t.dtype in _REAL_INTEGRAL):
            raise ParameterError(
                f"parameter {spec.label}: expected real numbers, received a {t.dtype} "
                "tensor; pass a real floating-point tensor."
            )
        if t.layout != torch.strided:
            raise ParameterError(
                f"parameter {spec.label}: received a {t.layout} tensor; pass a dense one "
                "(`.to_dense()`)."
            )
        tensors.append(t)
    return tensors


_REAL_INTEGRAL = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _common_dtype_device(
    smap: SolutionMap, params: Sequence[Any], tensors: Sequence[torch.Tensor]
) -> tuple[torch.dtype, torch.device]:
    """The outputs' dtype (the inputs' promoted) and device (the inputs').

    Only values given as tensors pin the device: Python numbers and arrays do not.
    """
    placed = {spec.label: t.device for spec, p, t in zip(smap.parameters, params, tensors,
                                                          strict=True)
              if isinstance(p, torch.Tensor)}
    devices = set(placed.values())
    if len(devices) > 1:
        where = ", ".join(f"{name} on {device}" for name, device in placed.items())
        raise ParameterError(
            f"parameters: tensors are on different devices ({where}); move them to one "
            "device, e.g. with `.to(device)`."
        )
    if torch.device("meta") in devices:
        raise ParameterError(
            f"parameters: received tensors on the meta device ({', '.join(placed)}), which "
            "hold no values to solve with; pass tensors on a real device (CPU, CUDA, ...)."
        )
    floats = [t.dtype for t in tensors if t.is_floating_point()]
    dtype = floats[0] if floats else torch.get_default_dtype()
    for other in floats[1:]:
        dtype = torch.promote_types(dtype, other)
    device = devices.pop() if devices else torch.device("cpu")
    return dtype, device


def _encode(solver_args: Mapping[str, Any] | None, on_failure: str | None,
            warm_start: bool) -> str:
    """Per-call options as a JSON string, the form a custom op can take."""
    if on_failure is not None:
        check_on_failure(on_failure)
    items = tuple((solver_args or {}).items())
    try:
        return encode(items, on_failure, warm_start)
    except TypeError as err:
        raise SolverArgumentError(
            f"solver_args: values must be plain numbers, strings or booleans ({err})."
        ) from err
