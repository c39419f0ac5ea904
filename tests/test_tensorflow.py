"""TensorFlow layer: the README example, the problem zoo, tf.function, batching, dtypes.

Gradients are checked against central finite differences of the layer itself, so the
forward must be far more accurate than the solvers' default tolerances: these layers
use ``refine=True`` (Newton polishing of the KKT conditions to ~1e-15). They are also
compared with the PyTorch layer's, which shares the framework-free core.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from convexlayers import SolverStatus  # noqa: E402
from convexlayers.tensorflow import CvxpyLayer  # noqa: E402
from fd import central_difference, directional, directions, weights  # noqa: E402
from zoo import CASES, REFERENCE_ATOL, readme_problem  # noqa: E402


def _make(case, **kwargs):
    return CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp, **kwargs)


def _call(layer, values, **kwargs):
    return [o.numpy() for o in layer(*[tf.constant(v) for v in values], **kwargs)]


def _value_and_grads(layer, values, w, graph=False):
    """Outputs and the gradient of L = Σ ⟨w_k, output_k⟩, eagerly or in a tf.function."""

    def run(*ts):
        with tf.GradientTape() as tape:
            tape.watch(ts)
            outs = layer(*ts)
            loss = tf.add_n([tf.reduce_sum(tf.constant(wk, o.dtype) * o)
                             for wk, o in zip(w, outs, strict=True)])
        return outs, tape.gradient(loss, ts)

    fn = tf.function(run) if graph else run
    outs, grads = fn(*[tf.constant(v) for v in values])
    return [o.numpy() for o in outs], [g.numpy() for g in grads]


# -- the README example ---------------------------------------------------------
def test_readme_tensorflow_example():
    n, m = 2, 3
    problem, A, b, x = readme_problem()
    assert problem.is_dpp()
    cvxpylayer = CvxpyLayer(problem, parameters=[A, b], variables=[x])
    tf.random.set_seed(0)
    A_tf = tf.Variable(tf.random.normal((m, n)))
    b_tf = tf.Variable(tf.random.normal((m,)))
    with tf.GradientTape() as tape:
        solution, = cvxpylayer(A_tf, b_tf)
        summed_solution = tf.math.reduce_sum(solution)
    gradA, gradb = tape.gradient(summed_solution, [A_tf, b_tf])

    assert solution.dtype == tf.float32 and solution.shape == (n,)
    assert gradA.dtype == tf.float32 and gradA.shape == (m, n)
    assert gradb.dtype == tf.float32 and gradb.shape == (m,)
    A.value, b.value = A_tf.numpy().astype(float), b_tf.numpy().astype(float)
    problem.solve()
    np.testing.assert_allclose(solution.numpy(), x.value, atol=1e-5)


def test_readme_gp_example():
    x, y, z = (cp.Variable(pos=True) for _ in range(3))
    a, b, c = cp.Parameter(pos=True, value=2.0), cp.Parameter(pos=True, value=1.0), \
        cp.Parameter(value=0.5)
    problem = cp.Problem(cp.Minimize(1 / (x * y * z)),
                         [a * (x * y + x * z + y * z) <= b, x >= y**c])
    layer = CvxpyLayer(problem, parameters=[a, b, c], variables=[x, y, z], gp=True)
    ts = [tf.Variable(p.value) for p in (a, b, c)]
    with tf.GradientTape() as tape:
        total = tf.add_n(layer(*ts))
    grads = tape.gradient(total, ts)
    problem.solve(gp=True)
    np.testing.assert_allclose(total.numpy(), x.value + y.value + z.value, rtol=1e-5)
    assert all(g is not None and np.isfinite(g.numpy()) for g in grads)


# -- the problem zoo --------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_zoo_forward_matches_cvxpy(name):
    case = CASES[name]()
    values = case.draw(np.random.default_rng(0))
    outs = _call(_make(case), values)
    case.set_values(values)
    case.problem.solve(gp=case.gp)
    for var, out in zip(case.variables, outs, strict=True):
        ref = np.reshape(var.value, out.shape)
        np.testing.assert_allclose(out, ref, atol=REFERENCE_ATOL * (1 + np.abs(ref).max()))


# Two ways to a forward accurate enough for finite differences: Newton refinement of an
# interior-point solution, or SCS run to a tight tolerance.
ACCURATE = {
    "clarabel_refined": {"refine": True},
    "scs_tight": {"solver": "SCS", "solver_args": {"eps": 1e-12, "max_iters": 100000}},
}
# SCS stalls short of 1e-12 there (~1e-4 error on the power cone; "solved inaccurate"
# on the log-log program's exponential cones): too coarse for finite differences.
SCS_COARSE = {"power_cone", "gp"}
FD_CASES = [(name, acc) for name in CASES for acc in ACCURATE
            if not (acc == "scs_tight" and name in SCS_COARSE)]


@pytest.mark.parametrize(("name", "accurate"), FD_CASES)
def test_zoo_gradient_matches_finite_differences_and_torch(name, accurate):
    case = CASES[name]()
    rng = np.random.default_rng(1)
    values = case.draw(rng)
    settings = ACCURATE[accurate]
    layer = _make(case, **settings)
    w = weights(_call(layer, values), rng)
    _, grads = _value_and_grads(layer, values, w)
    assert layer.info.derivative.residual[0] < 1e-10
    scale = max(1.0, max(np.abs(g).max() for g in grads))
    for _ in range(2):
        d = directions(case.parameters, values, rng)
        fd = central_difference(lambda v: _call(layer, v), values, d, w, h=1e-6)
        assert abs(directional(grads, d) - fd) <= 1e-6 * scale * (1 + abs(fd))

    torch = pytest.importorskip("torch")
    from convexlayers.torch import CvxpyLayer as TorchLayer

    ref_layer = TorchLayer(case.problem, case.parameters, case.variables, gp=case.gp,
                           **settings)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    loss = sum((torch.tensor(wk) * o).sum()
               for wk, o in zip(w, ref_layer(*tensors), strict=True))
    for g, ref in zip(grads, torch.autograd.grad(loss, tensors), strict=True):
        np.testing.assert_allclose(g, ref.numpy(), rtol=1e-9, atol=1e-9 * scale)


@pytest.mark.parametrize("name", list(CASES))
def test_zoo_eager_and_tf_function_agree(name):
    """A batch of 2, values and gradients, eagerly and inside tf.function."""
    case = CASES[name]()
    rng = np.random.default_rng(2)
    values = [np.stack(v) for v in zip(case.draw(rng), case.draw(rng), strict=True)]
    layer = _make(case)
    w = weights(_call(layer, values), rng)
    eager_out, eager_grads = _value_and_grads(layer, values, w)
    graph_out, graph_grads = _value_and_grads(layer, values, w, graph=True)
    for a, b in zip(eager_out + eager_grads, graph_out + graph_grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


# -- batching ---------------------------------------------------------------------
def test_batched_equals_loop_with_mixed_batched_and_unbatched_parameters():
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x])
    rng = np.random.default_rng(3)
    As, b0 = rng.standard_normal((4, 3, 2)), rng.standard_normal(3)
    w = rng.standard_normal((4, 2))
    (out,), (gA, gb) = _value_and_grads(layer, [As, b0], [w])
    assert out.shape == (4, 2) and gA.shape == (4, 3, 2) and gb.shape == (3,)
    loop_gb = np.zeros(3)
    for i in range(4):
        (o,), (ga, g) = _value_and_grads(layer, [As[i], b0], [w[i]])
        np.testing.assert_allclose(out[i], o, atol=1e-12)
        np.testing.assert_allclose(gA[i], ga, atol=1e-12)
        loop_gb += g
    np.testing.assert_allclose(gb, loop_gb, atol=1e-12)  # unbatched: summed over the batch


def test_explicit_batch_of_one_keeps_its_dimension():
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x])
    out, = layer(tf.ones((1, 3, 2)), tf.ones(3))
    assert out.shape == (1, 2)


def test_unknown_batch_dimension_in_tf_function():
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x])
    fn = tf.function(lambda A, b: layer(A, b)[0],
                     input_signature=[tf.TensorSpec((None, 3, 2), tf.float64),
                                      tf.TensorSpec((3,), tf.float64)])
    assert fn.get_concrete_function().structured_outputs.shape.as_list() == [None, 2]
    rng = np.random.default_rng(4)
    for size in (2, 5):
        As, b0 = rng.standard_normal((size, 3, 2)), rng.standard_normal(3)
        np.testing.assert_allclose(fn(As, b0).numpy(), _call(layer, [As, b0])[0], atol=1e-12)
        assert len(layer.info.status) == size  # info describes the call that ran


def test_unknown_shapes_are_checked_at_run_time():
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x])
    fn = tf.function(lambda A, b: layer(A, b)[0],
                     input_signature=[tf.TensorSpec(None, tf.float64),
                                      tf.TensorSpec(None, tf.float64)])
    assert fn.get_concrete_function().structured_outputs.shape.rank is None
    out = fn(np.ones((2, 3, 2)), np.ones(3))
    assert out.shape == (2, 2)


def test_symmetric_parameter_gets_a_symmetric_gradient():
    case = CASES["qp_param_P"]()
    values = case.draw(np.random.default_rng(8))
    w = [np.array([1.0, 2.0, -3.0]), np.array(0.5), np.ones(3)]
    _, (gP, _) = _value_and_grads(_make(case), values, w, graph=True)
    np.testing.assert_allclose(gP, gP.T, atol=1e-12)


@pytest.mark.parametrize("graph", [False, True])
def test_sparse_cotangent_from_gather(graph):
    """tf.gather on an output sends back IndexedSlices, also with an unknown batch size."""
    x, q = cp.Variable(3), cp.Parameter(3)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - q)), [x >= 0]), [q], [x])

    def grad(v):
        with tf.GradientTape() as tape:
            tape.watch(v)
            loss = tf.reduce_sum(tf.gather(layer(v)[0], [0, 2, 2]))
        return tape.gradient(loss, v)

    if graph:
        grad = tf.function(grad, input_signature=[tf.TensorSpec((None, 3), tf.float64)])
    g = grad(tf.constant([[1.0, 2.0, -1.0]] * 4, tf.float64))
    np.testing.assert_allclose(g.numpy(), [[1, 1, 0], [0, 0, 0], [2, 2, 0], [0, 0, 0]],
                               atol=1e-7)


# -- dtypes ---------------------------------------------------------------------------
@pytest.mark.parametrize(("dtypes", "expected"), [
    (("float32", "float32"), "float32"),
    (("float64", "float64"), "float64"),
    (("float32", "float64"), "float64"),
    (("float16", "float32"), "float32"),
    (("int32", "int32"), "float32"),
])
def test_outputs_and_gradients_in_the_input_dtype(dtypes, expected):
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x])
    rng = np.random.default_rng(5)
    ts = [tf.constant(rng.standard_normal(s) * 3, dtype=d) for s, d in zip(((3, 2), (3,)),
                                                                            dtypes, strict=True)]
    with tf.GradientTape() as tape:
        tape.watch(ts)
        out, = layer(*ts)
    assert out.dtype.name == expected
    for t, g in zip(ts, tape.gradient(out, ts), strict=True):
        assert g is None if t.dtype.is_integer else g.dtype == t.dtype


def test_numpy_and_python_inputs():
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x])
    out64, = layer(np.ones((3, 2)), np.ones(3))
    out32, = layer([[1.0, 1.0]] * 3, [1.0, 1.0, 1.0])
    assert out64.dtype == tf.float64 and out32.dtype == tf.float32
    np.testing.assert_allclose(out64.numpy(), out32.numpy(), atol=1e-6)


# -- solvers, solver_args, info ----------------------------------------------------------
@pytest.mark.parametrize("solver", ["CLARABEL", "SCS", "ECOS"])
def test_solver_choice(solver):
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x], solver=solver)
    rng = np.random.default_rng(6)
    values = [rng.standard_normal((3, 2)), rng.standard_normal(3)]
    out, = _call(layer, values)
    assert layer.info.solver == solver
    ref, = _call(CvxpyLayer(problem, [A, b], [x]), values)
    np.testing.assert_allclose(out, ref, atol=1e-3)


@pytest.mark.parametrize("graph", [False, True])
def test_per_call_solver_args(graph):
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x], solver_args={"max_iters": 500})
    values = [tf.ones((3, 2), tf.float64), tf.constant([1.0, 2.0, 3.0], tf.float64)]

    def run(solver_args):
        fn = tf.function(lambda *v: layer(*v, solver_args=solver_args)) if graph else \
            (lambda *v: layer(*v, solver_args=solver_args))
        with tf.GradientTape() as tape:
            tape.watch(values)
            out, = fn(*values)
        return out.numpy(), tape.gradient(out, values)[1].numpy()

    ref, gref = run(None)
    assert layer.info.solver == "CLARABEL"
    out, g = run({"solve_method": "ECOS"})
    assert layer.info.solver == "ECOS"
    np.testing.assert_allclose(out, ref, atol=1e-6)
    np.testing.assert_allclose(g, gref, atol=1e-5)
    run({"solve_method": "SCS", "eps": 1e-9})
    assert layer.info.solver == "SCS"


def test_info_reflects_the_last_executed_call():
    problem, A, b, x = readme_problem()
    layer = CvxpyLayer(problem, [A, b], [x])
    assert layer.info is None
    rng = np.random.default_rng(7)
    As = tf.constant(rng.standard_normal((3, 3, 2)))
    b0 = tf.constant(rng.standard_normal(3))

    @tf.function
    def step(A, b):
        with tf.GradientTape() as tape:
            tape.watch(A)
            out, = layer(A, b)
        return tape.gradient(out, A)

    step.get_concrete_function(As, b0)  # tracing runs nothing
    assert layer.info is None
    step(As, b0)
    info = layer.info
    assert info.status == (SolverStatus.OPTIMAL,) * 3 and info.ok
    assert (info.iterations > 0).all() and (info.solve_time > 0).all()
    assert info.derivative.method == ("lu",) * 3
    assert (info.derivative.residual < 1e-10).all()


@pytest.mark.parametrize("graph", [False, True])
def test_second_order_says_it_is_not_implemented(graph):
    x, q = cp.Variable(2), cp.Parameter(2)
    layer = CvxpyLayer(cp.Problem(cp.Minimize(cp.sum_squares(x - q)), [x >= 0]), [q], [x])

    def hessian_vector(v):
        with tf.GradientTape() as outer:
            outer.watch(v)
            with tf.GradientTape() as inner:
                inner.watch(v)
                loss = tf.reduce_sum(layer(v)[0] ** 2)
            g = tf.reduce_sum(inner.gradient(loss, v))
        return outer.gradient(g, v)

    fn = tf.function(hessian_vector) if graph else hessian_vector
    with pytest.raises(NotImplementedError, match="first derivatives only"):
        fn(tf.constant([1.0, 2.0]))
