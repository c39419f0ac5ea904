"""``CvxpyLayer`` for JAX."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np

from convexlayers._core import SolutionMap, SolveInfo
from convexlayers._core._executor import HasExecutor
from convexlayers._core._report import check_on_failure, check_warm_start
from convexlayers._errors import ParameterError, SolverArgumentError
from convexlayers.derivative import AbstractAdjoint, AbstractLinearSolver
from convexlayers.jax import _rules  # noqa: F401  (registers batching and AD rules)
from convexlayers.jax._primitives import jvp_p, solve_p


class CvxpyLayer(HasExecutor):
    """A differentiable convex optimization layer for JAX.

    Calling the layer solves the problem for the given parameter values (a batch at
    once). It works under ``jax.jit``, ``jax.vmap``, ``jax.grad``, ``jax.jvp``,
    ``jax.jacfwd`` and ``jax.jacrev``, in any composition, to first order.

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
        >>> import cvxpy as cp, jax.numpy as jnp
        >>> x = cp.Variable(2); A = cp.Parameter((3, 2)); b = cp.Parameter(3)
        >>> prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b)), [x >= 0])
        >>> layer = CvxpyLayer(prob, parameters=[A, b], variables=[x])
        >>> sol, = layer(jnp.ones((3, 2)), jnp.ones(3))
        >>> sol.shape
        (2,)
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
        """Diagnostics of the last finished call (under ``jit``: the last run, not trace):
        per-element status, iterations, times, residuals, and a derivative's if any."""
        return self._info

    def _record(self, info: SolveInfo) -> None:
        self._info = info

    def __call__(
        self,
        *params: jax.Array,
        solver_args: Mapping[str, Any] | None = None,
        on_failure: str | None = None,
        warm_start: bool = False,
    ) -> tuple[jax.Array, ...]:
        """Solve for the given parameter values.

        Args:
            *params: one array per parameter, of the parameter's shape or with a leading
                batch dimension.
            solver_args: settings for this call (e.g. ``{"eps": 1e-8}`` or
                ``{"solve_method": "ECOS"}``): static Python values, not traced; under
                ``jax.jit`` close over them rather than passing them as jitted arguments.
            on_failure: "raise" or "nan" for this call (default: the layer's); static.
            warm_start: start SCS or NATIVE from this layer's previous solution, element
                by element (a cold start if that call had another batch size); the
                answer is the same to the tolerance, often in fewer iterations. Static.

        Returns:
            One array per requested variable, in the floating dtype of the inputs, with a
            leading batch dimension if any input had one.

        Raises:
            ParameterError: wrong count, shapes or batch sizes (at trace time); NaN/Inf or
                values outside a parameter's domain (when it runs).
            SolverArgumentError: bad ``solver_args``.
            SolverError: no solution for some batch elements (when it runs). Under ``jit``
                run-time errors arrive as ``jax.errors.JaxRuntimeError`` with the original
                error's type and message in its text.
        """
        if len(params) != len(self._map.parameters):
            self._map.batch_spec([None] * len(params))  # the count error
        arrays = [None if p is None else _array(spec.label, p)
                  for spec, p in zip(self._map.parameters, params, strict=True)]
        self._map.batch_spec([None if a is None else a.shape for a in arrays])
        static = (_static(solver_args), on_failure and check_on_failure(on_failure),
                  check_warm_start(warm_start), self._record)
        self._map.backend(solver_args)  # validate before any work
        dtype = _float_dtype(arrays)
        return _solve(self._map, static, *(a.astype(dtype) for a in arrays))


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1))
def _solve(smap: SolutionMap, static: tuple, *params):
    solver_args, on_failure, warm_start, record = static
    outs = solve_p.bind(*params, smap=smap, solver_args=solver_args, on_failure=on_failure,
                        warm_start=warm_start, record=record)
    return tuple(outs[: len(smap.outputs)])


@_solve.defjvp
def _solve_jvp(smap: SolutionMap, static: tuple, primals, tangents):
    # The tangent map is the primitive jvp_p, linear in the tangents and transposable
    # to vjp_p: reverse mode comes from this rule, no separate custom_vjp is needed.
    solver_args, on_failure, warm_start, record = static
    res = solve_p.bind(*primals, smap=smap, solver_args=solver_args, on_failure=on_failure,
                       warm_start=warm_start, record=record)
    k = len(smap.outputs)
    solver = smap.backend(dict(solver_args))[0].name
    touts = jvp_p.bind(*primals, *res[k:], *tangents, smap=smap, solver=solver, record=record)
    return tuple(res[:k]), tuple(touts)


def _array(label: str, value: Any) -> jax.Array:
    """One parameter value as a real JAX array (Python numbers and nested lists accepted)."""
    try:
        array = jnp.asarray(value)
    except (TypeError, ValueError) as err:
        raise ParameterError(
            f"parameter {label}: expected an array of numbers, received "
            f"{type(value).__name__} ({err})."
        ) from err
    if not (jnp.issubdtype(array.dtype, jnp.floating) or jnp.issubdtype(array.dtype, jnp.integer)
            or array.dtype == jnp.bool_):
        raise ParameterError(
            f"parameter {label}: expected real numbers, received an array of dtype "
            f"{array.dtype}; pass a real floating-point array."
        )
    return array


def _static(solver_args: Mapping[str, Any] | None) -> tuple:
    """A call's solver settings as a hashable tuple: they are static under ``jit``."""
    if not isinstance(solver_args, Mapping | None):
        raise SolverArgumentError(
            f"solver_args: expected a dict, received {type(solver_args).__name__}."
        )
    items = tuple(sorted(dict(solver_args or {}).items()))
    try:
        hash(items)
    except TypeError as err:
        raise SolverArgumentError(
            "solver_args: values must be plain Python numbers, strings or booleans; they "
            "are static settings, not traced arrays. Under jax.jit or jax.vmap, close over "
            "them: jax.jit(lambda *p: layer(*p, solver_args={...}))."
        ) from err
    return items


def _float_dtype(arrays: Sequence[jax.Array]) -> np.dtype:
    """The common floating dtype of the inputs (JAX's default float for integers)."""
    dtype = jnp.result_type(*arrays) if arrays else jnp.result_type(float)
    if jnp.issubdtype(dtype, jnp.complexfloating):
        raise ParameterError("parameters: complex values are not supported; pass real arrays.")
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.result_type(float)
