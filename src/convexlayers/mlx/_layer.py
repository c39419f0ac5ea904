"""``CvxpyLayer`` for MLX."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import cvxpy as cp
import mlx.core as mx
import mlx.nn as nn

from convexlayers._core import SolutionMap, SolveInfo
from convexlayers._core._executor import HasExecutor
from convexlayers._core._report import check_on_failure, check_warm_start
from convexlayers._errors import ParameterError
from convexlayers.compile import ParamSpec
from convexlayers.derivative import AbstractAdjoint, AbstractLinearSolver
from convexlayers.mlx._ops import solve_function


class CvxpyLayer(nn.Module, HasExecutor):
    """A differentiable convex optimization layer for MLX.

    Calling the layer solves the problem for the given parameter values (a batch at
    once); ``mx.grad``, ``mx.value_and_grad``, ``mx.vjp``, ``mx.jvp`` and
    ``nn.value_and_grad`` differentiate the solution with respect to them, to first
    order. The solve runs in float64 with NumPy on the CPU; the outputs come back in
    the inputs' dtype. ``mx.compile`` and ``mx.vmap`` cannot trace it (pass a leading
    batch dimension instead of ``mx.vmap``).

    It is an ``mlx.nn.Module`` without trainable parameters, so that it sits in a model
    like any other layer.

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
            gradients, the rest is solved as usual, and ``layer.info.failed`` lists them.
        adjoint: the derivative strategy (default ``ImplicitAdjoint()`` from
            ``convexlayers.derivative``: outputs polished to the exact solution by Newton
            steps on the KKT conditions, so that they agree with their gradients; the
            backward pass reuses the last step's factorization).
        executor: solve batches larger than one chunk on a ``concurrent.futures.Executor``
            (a process pool, a Dask or Ray cluster), forward and backward;
            ``convexlayers.ChunkedExecutor(executor, chunk_size, timeout)`` tunes it.
            Settable later as ``layer.executor``; not pickled or copied with the layer.

    The layer pickles and deep-copies; one layer may be called from several threads.

    Example:
        >>> import cvxpy as cp, mlx.core as mx
        >>> x = cp.Variable(2); A = cp.Parameter((3, 2)); b = cp.Parameter(3)
        >>> prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b)), [x >= 0])
        >>> layer = CvxpyLayer(prob, parameters=[A, b], variables=[x])
        >>> sol, = layer(mx.ones((3, 2)), mx.ones(3))
        >>> sol.shape, sol.dtype
        ((2,), mlx.core.float32)
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

    @property
    def info(self) -> SolveInfo | None:
        """Diagnostics of the last finished call (forward, or a derivative with its
        forward): per-element status, iterations, times, residuals, and the derivative's."""
        return self._info

    def _record(self, info: SolveInfo) -> None:
        self._info = info

    def _extra_repr(self) -> str:
        names = ", ".join(spec.label for spec in self._map.parameters)
        return f"parameters=[{names}], solver={self._map.solver.name}"

    def __call__(
        self,
        *params: Any,
        solver_args: Mapping[str, Any] | None = None,
        on_failure: str | None = None,
        warm_start: bool = False,
    ) -> tuple[mx.array, ...]:
        """Solve for the given parameter values.

        Args:
            *params: one array per parameter (``mx.array``, NumPy array, nested list or
                number, converted as ``mx.array`` converts them), of the parameter's
                shape or with a leading batch dimension.
            solver_args: settings for this call (e.g. ``{"eps": 1e-8}`` or
                ``{"solve_method": "ECOS"}``).
            on_failure: "raise" or "nan" for this call (default: the layer's).
            warm_start: start SCS or NATIVE from this layer's previous solution, element
                by element (a cold start if that call had another batch size); the
                answer is the same to the tolerance, often in fewer iterations.

        Returns:
            One array per requested variable, in the floating dtype of the inputs
            (float32 for integer inputs), with a leading batch dimension if any input
            had one.

        Raises:
            ParameterError: wrong count, type, shapes or batch sizes; NaN/Inf or values
                outside a parameter's declared domain (all before any solve).
            SolverArgumentError: bad ``solver_args`` or ``on_failure``.
            SolverError: no solution for some batch elements (``on_failure="raise"``).
            NotImplementedError: called inside ``mx.compile`` or ``mx.vmap``, or
                differentiated twice.
        """
        smap = self._map
        if len(params) != len(smap.parameters):
            smap.batch_spec([()] * len(params))  # the count error
        arrays = [_array(spec, p) for spec, p in zip(smap.parameters, params, strict=True)]
        smap.batch_spec([tuple(a.shape) for a in arrays])
        smap.backend(solver_args)  # validate before any work
        if on_failure is not None:
            check_on_failure(on_failure)
        solve = solve_function(smap, self._record, dict(solver_args or {}), on_failure,
                               _float_dtype(arrays), check_warm_start(warm_start))
        return tuple(cast(Sequence[mx.array], solve(*arrays)))


def _array(spec: ParamSpec, value: Any) -> mx.array:
    """One parameter value as a real MLX array (NumPy arrays, lists and numbers accepted)."""
    if value is None:
        raise ParameterError(
            f"parameter {spec.label}: received None; pass a value of shape {spec.shape}."
        )
    try:
        array = value if isinstance(value, mx.array) else mx.array(value)
    except (TypeError, ValueError) as err:
        raise ParameterError(
            f"parameter {spec.label}: expected an array of numbers, received "
            f"{type(value).__name__} ({err})."
        ) from err
    dtype = array.dtype
    if not (mx.issubdtype(dtype, mx.floating) or mx.issubdtype(dtype, mx.integer)
            or dtype == mx.bool_):
        # NumPy's complex128 becomes MLX's complex64: name the dtype the caller passed.
        raise ParameterError(
            f"parameter {spec.label}: expected real numbers, received an array of dtype "
            f"{getattr(value, 'dtype', dtype)}; pass a real floating-point array."
        )
    return array


def _float_dtype(arrays: Sequence[mx.array]) -> mx.Dtype:
    """The outputs' dtype: the inputs' floating dtypes promoted (float32 if none)."""
    floats = [a.dtype for a in arrays if mx.issubdtype(a.dtype, mx.floating)]
    return mx.result_type(*floats) if floats else mx.float32
