"""Bad input to the TensorFlow layer beyond the shared table (tests/bad_inputs.py, run by
test_bad_inputs_tensorflow.py): a list for the values, shapes unknown while tracing, the
symmetric part of a PSD value, XLA, and TensorFlow not installed.

What the static shapes show (count, shapes, batch sizes, solver_args) raises our own
exception while tracing. What only the values show (NaN, domains, infeasibility, or
shapes unknown while tracing) is found when the graph runs: eagerly it is our own
exception; inside ``tf.function`` TensorFlow reports it as
``tf.errors.InvalidArgumentError`` (our ValueErrors) or ``tf.errors.UnknownError``
(SolverError, a RuntimeError), carrying our message.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from convexlayers import ConvexLayersError, ParameterError  # noqa: E402
from convexlayers.tensorflow import CvxpyLayer  # noqa: E402
from zoo import matrix_parameters, readme_problem  # noqa: E402

MODES = ["eager", "graph"]


def _caller(layer, mode, **kwargs):
    fn = lambda *params: layer(*params, **kwargs)  # noqa: E731
    return tf.function(fn) if mode == "graph" else fn


def _run_time(mode, error, graph_error=tf.errors.InvalidArgumentError):
    """The exception a value error raises: ours eagerly, TensorFlow's in a graph."""
    return error if mode == "eager" else graph_error


@pytest.fixture
def layer():
    prob, A, b, _ = readme_problem()
    return CvxpyLayer(prob, [A, b], [prob.variables()[0]])


# -- found from the static shapes: our exception in both modes ----------------------
@pytest.mark.parametrize("mode", MODES)
def test_wrong_number_of_tensors(layer, mode):
    with pytest.raises(ParameterError, match=r"takes 2 parameter values \(A, b"):
        _caller(layer, mode)(tf.ones((3, 2)))
    with pytest.raises(ParameterError, match=r"takes 2 parameter values \(A, b.*received 1"):
        _caller(layer, mode)([tf.ones((3, 2)), tf.ones(3)])  # a list instead of two values


def test_shapes_unknown_while_tracing_are_checked_when_the_graph_runs(layer):
    fn = tf.function(lambda A, b: layer(A, b),
                     input_signature=[tf.TensorSpec((None, 3, 2)), tf.TensorSpec((None, 3))])
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"batch sizes disagree.*'A' has 4.*'b' has 5"):
        fn(tf.ones((4, 3, 2)), tf.ones((5, 3)))
    fn = tf.function(lambda A, b: layer(A, b), input_signature=[tf.TensorSpec(None)] * 2)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"'A': expected shape \(3, 2\)"):
        fn(tf.ones((2, 3)), tf.ones(3))


# -- found from the values: at run time -------------------------------------------------
@pytest.mark.parametrize("mode", MODES)
def test_domain_symmetric_and_psd(mode):
    call = _caller(CvxpyLayer(*matrix_parameters()), mode)
    eye = tf.eye(2, dtype=tf.float64)
    # Symmetric and PSD parameters are symmetrized, not checked for symmetry.
    P = tf.constant([[2.0, 0.5], [-0.5, 1.0]], tf.float64)
    S = tf.constant([[0.0, 1.0], [0.0, 0.0]], tf.float64)
    sym = [0.5 * (M + tf.transpose(M)) for M in (P, S)]
    for a, b in zip(call(P, S), call(*sym), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-12)
    with pytest.raises(_run_time(mode, ParameterError),
                       match=r"'P': declared positive semidefinite.*eigenvalue -1"):
        call(tf.linalg.diag(tf.constant([1.0, -1.0], tf.float64)), eye)


# -- where the layer cannot run -----------------------------------------------------------
def test_xla_compilation_says_what_to_do(layer):
    fn = tf.function(lambda A, b: layer(A, b), jit_compile=True)
    with pytest.raises(ConvexLayersError, match=r"cannot be compiled with XLA.*jit_compile"):
        fn(tf.ones((3, 2)), tf.ones(3))


def test_imports_without_tensorflow():
    script = textwrap.dedent("""
        import sys
        import convexlayers
        assert "tensorflow" not in sys.modules and "keras" not in sys.modules
        sys.modules["tensorflow"] = None  # as if it were not installed
        try:
            import convexlayers.tensorflow
        except ImportError as err:
            assert 'pip install "convexlayers[tensorflow]"' in str(err), err
        else:
            raise AssertionError("no ImportError")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
