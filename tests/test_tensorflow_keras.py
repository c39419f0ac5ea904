"""The TensorFlow layer inside Keras: compile/fit in graph mode, save/load, functional API."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from convexlayers.tensorflow import CvxpyLayer  # noqa: E402


@keras.saving.register_keras_serializable(package="convexlayers_tests")
class L1BallProjection(keras.layers.Layer):
    """Euclidean projection onto the l1 ball: the documented pattern for a savable model.

    The CVXPY problem is built in ``__init__`` from plain values, which ``get_config``
    returns, so ``keras.models.load_model`` rebuilds an identical layer.
    """

    def __init__(self, n, radius=1.0, **kwargs):
        super().__init__(**kwargs)
        self.n, self.radius = n, radius
        x, q = cp.Variable(n), cp.Parameter(n)
        problem = cp.Problem(cp.Minimize(cp.sum_squares(x - q)), [cp.norm(x, 1) <= radius])
        self.projection = CvxpyLayer(problem, parameters=[q], variables=[x])
        self.traced_shapes = []

    def call(self, q):
        # A Python side effect: in graph mode it runs while tracing only.
        self.traced_shapes.append((q.shape.as_list(), tf.executing_eagerly()))
        return self.projection(q)[0]

    def get_config(self):
        return {**super().get_config(), "n": self.n, "radius": self.radius}


def _data(rng, size=60):
    X = rng.standard_normal((size, 4)).astype("float32")
    W = rng.standard_normal((4, 3)).astype("float32")
    Y = np.clip(X @ W, -0.3, 0.3)  # a point of the l1 ball of radius 1 for each row
    return X, Y


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), L1BallProjection(3)])


def test_fit_in_graph_mode_reduces_the_loss():
    X, Y = _data(np.random.default_rng(0))
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    projection = model.layers[-1]
    projection.traced_shapes.clear()
    history = model.fit(X, Y, epochs=6, batch_size=16, verbose=0)  # 60 = 3 x 16 + 12
    loss = history.history["loss"]
    assert loss[-1] < 0.7 * loss[0]
    assert not model.run_eagerly and not model.jit_compile
    assert not projection.projection.supports_jit  # what keeps jit_compile="auto" off
    # traced (not run eagerly) with an unknown batch dimension
    assert projection.traced_shapes
    assert all(t == ([None, 3], False) for t in projection.traced_shapes)
    assert projection.projection.info.ok


def test_fit_eagerly_matches_graph_mode():
    X, Y = _data(np.random.default_rng(1), size=16)
    losses = []
    for eager in (False, True):
        model = _model(seed=3)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse", run_eagerly=eager)
        losses.append(model.fit(X, Y, epochs=2, batch_size=8, verbose=0,
                                shuffle=False).history["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_save_and_load_round_trip(tmp_path):
    X, Y = _data(np.random.default_rng(2), size=20)
    model = _model()
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(X, Y, epochs=1, batch_size=10, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(X, verbose=0), model.predict(X, verbose=0),
                               atol=1e-6)
    assert loaded.layers[-1].get_config()["radius"] == 1.0
    loaded.fit(X, Y, epochs=1, batch_size=10, verbose=0)  # and it trains on


def test_functional_api_with_the_layer_itself():
    x, q = cp.Variable(3), cp.Parameter(3)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - q)), [x >= 0]), [q], [x])
    inputs = keras.Input((3,))
    out, = layer(inputs)
    assert out.shape == (None, 3)
    model = keras.Model(inputs, out)
    values = np.array([[1.0, -2.0, 0.5], [-1.0, 3.0, -0.1]], dtype="float32")
    np.testing.assert_allclose(model.predict(values, verbose=0), np.maximum(values, 0),
                               atol=1e-6)
    with pytest.raises(NotImplementedError, match="wrap the layer in your own"):
        layer.get_config()


def test_keras_does_not_compile_the_model_with_xla():
    """The layer's supports_jit=False makes Keras refuse XLA (what "auto" uses on GPUs)."""
    X, Y = _data(np.random.default_rng(4), size=8)
    model = _model()
    with pytest.warns(UserWarning, match="doesn't support `jit_compile=True`"):
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    assert not model.jit_compile
    model.fit(X, Y, epochs=1, batch_size=4, verbose=0)
