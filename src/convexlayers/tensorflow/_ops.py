"""The solve and its vector-Jacobian product as TensorFlow ops.

The solver runs in Python/NumPy, so the solve is a ``tf.numpy_function``: it runs
eagerly, and in a graph (``tf.function``, Keras ``fit``) it becomes one opaque
node that calls back into Python when the graph executes. ``tf.custom_gradient``
attaches the backward pass, itself a second ``tf.numpy_function`` around
:meth:`SolutionMap.vjp`. Both ops are stateful (the TensorFlow default): that
keeps the graph optimizer from pruning, merging or constant-folding a solve, and
automatic control dependencies run them in program order, so ``layer.info``
describes the last call executed.

Everything here is float64; the layer casts at the boundary.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from convexlayers._core import STATE_SIZE, SolutionMap, SolveInfo
from convexlayers._errors import ConvexLayersError

try:  # private, but the only way to see an enclosing jit_compile=True while tracing
    from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
except ImportError:  # pragma: no cover - TensorFlow moved it
    GraphOrParentsInXlaContext = None


def _float64(arrays) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def check_not_xla() -> None:
    """Raise a clear error instead of XLA's when traced under ``jit_compile=True``."""
    if tf.executing_eagerly() or GraphOrParentsInXlaContext is None:
        return
    if GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
        raise ConvexLayersError(
            "CvxpyLayer cannot be compiled with XLA: its solver runs in Python "
            "(tf.numpy_function). Use tf.function without jit_compile=True; in Keras, "
            "model.compile(jit_compile=False) (the default 'auto' already turns XLA off "
            "for a model containing a CvxpyLayer)."
        )


def solve(
    smap: SolutionMap,
    record: Callable[[SolveInfo], None],
    params: Sequence[tf.Tensor],
    options: tuple[Mapping[str, Any] | None, str | None, bool],
    output_shapes: Sequence[tf.TensorShape],
) -> list[tf.Tensor]:
    """Differentiable solve: float64 parameter tensors -> float64 output tensors.

    Args:
        smap: the layer's solution map.
        record: called with each finished call's diagnostics (forward, then backward).
        params: one float64 tensor per parameter.
        options: this call's ``solver_args``, ``on_failure`` and ``warm_start`` (validated;
            captured by value).
        output_shapes: static shapes to give the outputs.

    Returns:
        One tensor per output of ``smap``.
    """
    solver_args, on_failure, warm_start = dict(options[0] or {}), options[1], options[2]
    solver = smap.backend(solver_args)[0].name
    num_outputs = len(smap.outputs)

    def forward(*values):
        sol = smap.solve(list(values), solver_args, on_failure, warm_start)
        record(sol.info)
        return _float64([*sol.outputs, *sol.state])

    @tf.custom_gradient
    def op(*params):
        results = tf.numpy_function(
            forward, list(params), [tf.float64] * (num_outputs + STATE_SIZE),
            name="cvxpy_solve",
        )
        outputs, state = list(results[:num_outputs]), list(results[num_outputs:])
        for out, shape in zip(outputs, output_shapes, strict=True):
            out.set_shape(shape)

        def grad(*cotangents):
            dense = [_dense(c, o) for c, o in zip(cotangents, outputs, strict=True)]
            return vjp(smap, record, solver, list(params), state, dense)

        return outputs, grad

    return list(op(*params))


def _dense(cotangent, output: tf.Tensor) -> tf.Tensor:
    """An output's cotangent as a dense float64 tensor (None means zero)."""
    if cotangent is None:
        return tf.zeros_like(output)
    if isinstance(cotangent, tf.IndexedSlices):  # e.g. from tf.gather on an output
        rows = tf.shape(output, out_type=cotangent.indices.dtype)[0]
        cotangent = tf.math.unsorted_segment_sum(cotangent.values, cotangent.indices, rows)
    return tf.cast(cotangent, tf.float64)


def vjp(
    smap: SolutionMap,
    record: Callable[[SolveInfo], None],
    solver: str,
    params: list[tf.Tensor],
    state: list[tf.Tensor],
    cotangents: list[tf.Tensor],
) -> list[tf.Tensor]:
    """Cotangents of the outputs -> cotangents of the parameters (float64 tensors)."""
    k = len(params)

    def backward(*arrays):
        values, state = arrays[:k], arrays[k : k + STATE_SIZE]
        grads, info = smap.vjp(list(values), list(state), list(arrays[k + STATE_SIZE :]), solver)
        record(info)
        return _float64(grads)

    @tf.custom_gradient
    def op(*inputs):
        grads = tf.numpy_function(backward, list(inputs), [tf.float64] * k,
                                  name="cvxpy_solve_vjp")
        grads = [grads] if isinstance(grads, tf.Tensor) else list(grads)  # one Tout: no list
        for g, p in zip(grads, params, strict=True):
            g.set_shape(p.shape)
        return grads, _no_second_order

    return list(op(*params, *state, *cotangents))


def _no_second_order(*_):
    # Without this, TensorFlow would silently give None for a gradient of a gradient.
    raise NotImplementedError(
        "CvxpyLayer has first derivatives only: a gradient of its gradient (e.g. nested "
        "GradientTapes, Hessian-vector products, gradient penalties) is not implemented."
    )
