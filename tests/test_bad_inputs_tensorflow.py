"""The bad-input table (tests/bad_inputs.py) on the TensorFlow layer, eagerly and inside
``tf.function``.

Inside a graph, what the static shapes, dtypes and settings show raises our own exception
while tracing. What only the values show raises when the graph runs, reported by
TensorFlow as ``tf.errors.InvalidArgumentError`` (our ValueErrors) or
``tf.errors.UnknownError`` (SolverError, a RuntimeError) carrying our message.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from bad_inputs import BUILD_ROWS, CALL_ROWS, CallRow, Raw, Result, check_row, row_id  # noqa: E402
from convexlayers import ParameterError  # noqa: E402
from convexlayers.tensorflow import CvxpyLayer  # noqa: E402
from zoo import readme_problem  # noqa: E402

MODES = ["eager", "graph"]


def _program(row: CallRow, layer: CvxpyLayer, values: list, idx: list[int]):
    """The function of the tensor values that the row probes."""

    def forward(*traced):
        vals = [v.value if isinstance(v, Raw) else None for v in values]
        for i, t in zip(idx, traced, strict=True):
            vals[i] = t
        return layer(*vals, **row.call)

    def grad(*traced):
        with tf.GradientTape() as tape:
            tape.watch(traced)
            outs = forward(*traced)
            loss = tf.reduce_sum(outs[0])
        return outs, tape.gradient(loss, traced)

    def hessian(*traced):
        with tf.GradientTape() as outer:
            outer.watch(traced)
            with tf.GradientTape() as inner:
                inner.watch(traced)
                loss = tf.reduce_sum(forward(*traced)[0])
            g = tf.reduce_sum(inner.gradient(loss, traced[0]))
        return outer.gradient(g, traced)

    return {"forward": forward, "grad": grad, "hessian": hessian}[row.probe]


def _run(row: CallRow, mode: str) -> Result:
    args, kwargs = row.layer()
    layer = CvxpyLayer(*args, **kwargs)
    values = row.values()
    idx = [i for i, v in enumerate(values) if not isinstance(v, Raw)]
    tensors = [tf.constant(values[i]) for i in idx]
    fn = _program(row, layer, values, idx)
    result = (tf.function(fn) if mode == "graph" else fn)(*tensors)
    outs, grads = result if row.probe == "grad" else (result, None)
    return Result([o.numpy() for o in outs], [o.dtype.name for o in outs],
                  None if grads is None else [g.numpy() for g in grads])


def _expected(row: CallRow, mode: str) -> type[Exception]:
    assert row.error is not None
    if mode == "graph" and row.when == "run":
        if issubclass(row.error, ValueError):
            return tf.errors.InvalidArgumentError
        return tf.errors.UnknownError
    return row.error


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("row", CALL_ROWS, ids=row_id)
def test_call(row, mode):
    check_row(row, lambda: _run(row, mode), lambda: _expected(row, mode))


@pytest.mark.parametrize("row", BUILD_ROWS, ids=row_id)
def test_construction(row):
    args, kwargs = row.build()
    with pytest.raises(row.error, match=row.match):
        CvxpyLayer(*args, **kwargs)


# -- what only TensorFlow has: sparse and ragged tensors ------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_sparse_and_ragged_tensors(mode):
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    call = tf.function(layer) if mode == "graph" else layer
    with pytest.raises(ParameterError, match=r"'A': received a SparseTensor; pass a dense "
                                             r"tensor \(tf.sparse.to_dense\(value\)\)"):
        call(tf.sparse.from_dense(np.ones((3, 2))), tf.ones(3, tf.float64))
    with pytest.raises(ParameterError, match=r"'A': received a RaggedTensor.*to_tensor"):
        call(tf.ragged.constant([[1.0, 2.0], [3.0], [1.0, 1.0]]), tf.ones(3))
