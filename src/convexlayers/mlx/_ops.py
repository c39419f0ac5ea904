"""The solve as an ``mx.custom_function`` with VJP and JVP rules.

MLX records a graph while it runs a function eagerly (``mx.grad``, ``mx.vjp``,
``mx.jvp`` call the function with real arrays), so the solve can read the
parameter values, as float64 NumPy arrays, when the layer is called. Each call
builds its own custom function: what its derivative needs (the solver's state)
stays in that function's closure, so calls never mix and the layer holds no
per-call state (one layer may serve several threads).

``mx.compile`` and ``mx.vmap`` call the function with placeholders whose values
cannot be read; the layer then raises a clear error (a batch is passed as a leading
dimension instead of ``mx.vmap``).

The derivative rules hand their results back through a second custom function
whose own rules raise: a gradient of a gradient fails loudly instead of being
silently zero, because the solution map is differentiated to first order only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import mlx.core as mx
import numpy as np

from convexlayers._core import Solution, SolutionMap, SolveInfo

SECOND_ORDER = (
    "CvxpyLayer has first derivatives only: a derivative of its derivative (mx.grad of "
    "mx.grad, mx.jvp of a gradient, Hessians) is not implemented."
)
TRACED = (
    "CvxpyLayer cannot run inside mx.compile or mx.vmap: it solves with NumPy, which "
    "needs the parameter values, and these transformations hide them. Call the layer "
    "outside mx.compile (compile the rest of the model separately); instead of mx.vmap, "
    "pass the parameters with a leading batch dimension: one call solves the whole batch."
)

# MLX floating dtypes NumPy can hold; bfloat16 goes through float32.
_NUMPY = {mx.float16: np.float16, mx.float32: np.float32, mx.float64: np.float64}


def to_numpy(array: mx.array) -> np.ndarray:
    """An MLX array as a float64 NumPy array (a copy).

    Raises:
        NotImplementedError: the array is a placeholder of ``mx.compile`` / ``mx.vmap``.
    """
    if array.dtype == mx.bfloat16:
        array = array.astype(mx.float32)
    try:
        return np.array(array, dtype=np.float64)
    except ValueError as err:
        if "[eval]" in str(err):
            raise NotImplementedError(TRACED) from err
        raise


def to_mlx(array: np.ndarray, dtype: mx.Dtype) -> mx.array:
    """A NumPy array as an MLX array of ``dtype``, converted on the host (0-d stays 0-d).

    float64 stays float64 (no kernel runs: on Apple silicon, whose GPU has no float64,
    the array is usable on the CPU stream).
    """
    if dtype in _NUMPY:
        return mx.array(np.asarray(array, dtype=_NUMPY[dtype], order="C"), dtype=dtype)
    return mx.array(np.asarray(array, dtype=np.float32, order="C")).astype(dtype)


def _arrays(tree: Any) -> tuple:
    """A custom function's primals (or tangents) as a tuple: MLX passes a lone argument
    bare and several as a tuple."""
    return tuple(tree) if isinstance(tree, tuple | list) else (tree,)


def first_order_only(results: Sequence[mx.array], depends: Sequence[Any]) -> tuple:
    """``results`` as outputs of a function of ``depends`` whose derivatives raise."""
    inputs = [d for d in depends if isinstance(d, mx.array)]

    @mx.custom_function
    def derivative(*_: mx.array) -> tuple:
        return tuple(results)

    @derivative.vjp
    def _vjp(primals, cotangents, outputs):
        raise NotImplementedError(SECOND_ORDER)

    @derivative.jvp
    def _jvp(primals, tangents):
        raise NotImplementedError(SECOND_ORDER)

    return cast(tuple, derivative(*inputs)) if inputs else tuple(results)


def solve_function(
    smap: SolutionMap,
    record: Callable[[SolveInfo], None],
    solver_args: Mapping[str, Any],
    on_failure: str | None,
    dtype: mx.Dtype,
    warm_start: bool = False,
) -> mx.custom_function:
    """The custom function of one call: parameter arrays -> output arrays of ``dtype``.

    Args:
        smap: the layer's solution map.
        record: stores a finished call's diagnostics on the layer (``layer.info``).
        solver_args, on_failure, warm_start: the call's settings (already validated).
        dtype: the outputs' dtype. A parameter's gradient has its own dtype if it is
            floating point, else this one.
    """
    solver = smap.backend(solver_args)[0].name
    memo: dict[str, Any] = {}

    def solved(primals: tuple) -> tuple[list[np.ndarray], Solution]:
        if "solution" not in memo:  # a rule called without the forward solves again
            values = [to_numpy(p) for p in primals]
            solution = smap.solve(values, solver_args, on_failure, warm_start)
            record(solution.info)
            memo["values"], memo["solution"] = values, solution
        return memo["values"], memo["solution"]

    def grad_dtype(p: mx.array) -> mx.Dtype:
        return p.dtype if mx.issubdtype(p.dtype, mx.floating) else dtype

    @mx.custom_function
    def solve(*params: mx.array) -> tuple[mx.array, ...]:
        _, solution = solved(params)
        return tuple(to_mlx(o, dtype) for o in solution.outputs)

    @solve.vjp
    def _vjp(primals, cotangents, outputs):
        primals = _arrays(primals)
        values, solution = solved(primals)
        cots = [None if c is None else to_numpy(c) for c in _arrays(cotangents)]
        grads, info = smap.vjp(values, solution.state, cots, solver)
        record(info)
        results = [to_mlx(g, grad_dtype(p)) for g, p in zip(grads, primals, strict=True)]
        return first_order_only(results, [*_arrays(cotangents), *primals])

    @solve.jvp
    def _jvp(primals, tangents):
        primals = _arrays(primals)
        values, solution = solved(primals)
        tans = [None if t is None else to_numpy(t) for t in _arrays(tangents)]
        touts, info = smap.jvp(values, solution.state, tans, solver)
        record(info)
        results = [to_mlx(t, dtype) for t in touts]
        return first_order_only(results, [*_arrays(tangents), *primals])

    return solve
