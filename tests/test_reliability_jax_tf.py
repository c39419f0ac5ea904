"""JAX and TensorFlow layers as plain values: copies, pickles, per-call info, NaN policy.

The PyTorch side, threads and the iteration limit are in test_reliability.py.
"""

from __future__ import annotations

import copy
import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convexlayers.jax import CvxpyLayer as JaxLayer
from zoo import box_qp, box_qp_values

jax.config.update("jax_enable_x64", True)
tf = pytest.importorskip("tensorflow")
from convexlayers.tensorflow import CvxpyLayer as TFLayer  # noqa: E402

_W = np.arange(1.0, 4.0)


def _jax_run(layer, values):
    def loss(*v):
        return (layer(*v)[0] * _W).sum()

    x = layer(*values)[0]
    grads = jax.grad(loss, argnums=(0, 1, 2))(*[jnp.asarray(v) for v in values])
    return np.asarray(x), [np.asarray(g) for g in grads]


def _tf_run(layer, values):
    tensors = [tf.constant(v) for v in values]
    with tf.GradientTape() as tape:
        tape.watch(tensors)
        (x,) = layer(*tensors)
        loss = tf.reduce_sum(x * _W)
    return x.numpy(), [g.numpy() for g in tape.gradient(loss, tensors)]


FRAMEWORKS = {"jax": (JaxLayer, _jax_run), "tensorflow": (TFLayer, _tf_run)}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_pickle_and_deepcopy_give_identical_results(framework):
    make, run = FRAMEWORKS[framework]
    layer = make(*box_qp())
    values = box_qp_values(3, np.random.default_rng(0))
    x0, g0 = run(layer, values)
    for other in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        x1, g1 = run(other, values)
        np.testing.assert_array_equal(x0, x1)
        for a, b in zip(g0, g1, strict=True):
            np.testing.assert_array_equal(a, b)
        assert len(other.info.status) == 3 and len(layer.info.status) == 3


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_on_failure_nan(framework):
    make, run = FRAMEWORKS[framework]
    layer = make(*box_qp(), on_failure="nan")
    values = box_qp_values(4, np.random.default_rng(1), infeasible=[2])
    x, grads = run(layer, values)
    assert np.isnan(x[2]).all() and np.isfinite(x[[0, 1, 3]]).all()
    assert layer.info.failed == (2,) and layer.info.derivative.method[2] == "none"
    for g in grads:
        assert np.isfinite(g).all() and (g[2] == 0).all()


def test_jax_info_under_jit_is_the_last_run():
    layer = JaxLayer(*box_qp())
    rng = np.random.default_rng(2)
    f = jax.jit(jax.grad(lambda *v: layer(*v)[0].sum(), argnums=0))
    for batch in (2, 5):
        f(*box_qp_values(batch, rng))
        assert len(layer.info.status) == batch and len(layer.info.derivative.method) == batch


def test_tensorflow_info_in_a_graph_is_the_last_run():
    layer = TFLayer(*box_qp())
    rng = np.random.default_rng(3)

    @tf.function
    def grad(*values):
        with tf.GradientTape() as tape:
            tape.watch(values)
            loss = tf.reduce_sum(layer(*values)[0])
        return tape.gradient(loss, values)

    for batch in (2, 5):
        grad(*[tf.constant(v) for v in box_qp_values(batch, rng)])
        assert len(layer.info.status) == batch and len(layer.info.derivative.method) == batch
