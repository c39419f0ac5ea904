"""MLX layer: the zoo's forward and gradients, batching, duals, dtypes, failures, info,
copies, transformations, and the bad-input table.

Gradients are checked in float64 against central finite differences of the layer at a
step of √eps times the values' scale (the layers polish solutions to ~1e-15, so the
difference quotient is accurate to ~1e-7), against the forward mode (adjointness), and
against the PyTorch layer where it is installed.
"""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import ThreadPoolExecutor

import cvxpy as cp
import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
nn = pytest.importorskip("mlx.nn")
from mlx.utils import tree_flatten  # noqa: E402

from bad_inputs import BUILD_ROWS, CALL_ROWS, CallRow, Raw, Result, check_row, row_id  # noqa: E402
from convexlayers import ParameterError, SolverError, SolverStatus  # noqa: E402
from convexlayers.mlx import CvxpyLayer  # noqa: E402
from fd import central_difference, directional, directions, weights  # noqa: E402
from zoo import CASES, REFERENCE_ATOL, interval, readme_problem  # noqa: E402

F64 = mx.float64


def _mx(values, dtype=F64) -> list:
    return [mx.array(np.asarray(v), dtype=dtype) for v in values]


def _np(arrays) -> list[np.ndarray]:
    """MLX arrays as NumPy; a lone array (mx.grad with one argnum returns it bare) too."""
    return [np.array(a) for a in (arrays if isinstance(arrays, tuple | list) else [arrays])]


def _layer(case, **kwargs) -> CvxpyLayer:
    return CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp, **kwargs)


def _loss(layer, w):
    """L(θ) = Σ ⟨w_k, output_k⟩ as a function of MLX arrays."""
    ws = _mx(w)

    def loss(*params):
        outs = layer(*params)
        return sum((wk * o).sum() for wk, o in zip(ws, outs, strict=True))

    return loss


def _grads(layer, values, w) -> list[np.ndarray]:
    argnums = tuple(range(len(values)))
    return _np(mx.grad(_loss(layer, w), argnums=argnums)(*_mx(values)))


def _forward(layer):
    return lambda values: _np(layer(*_mx(values)))


# -- the zoo ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_cvxpy(name):
    case = CASES[name]()
    values = case.draw(np.random.default_rng(0))
    outs = _forward(_layer(case))(values)
    case.set_values(values)
    case.problem.solve(solver="CLARABEL", gp=case.gp)
    for var, out in zip(case.variables, outs, strict=True):
        ref = np.reshape(var.value, out.shape)
        np.testing.assert_allclose(out, ref, atol=REFERENCE_ATOL * (1 + np.abs(ref).max()))


@pytest.mark.parametrize("name", list(CASES))
def test_grad_matches_finite_differences(name):
    case = CASES[name]()
    rng = np.random.default_rng(1)
    values = case.draw(rng)
    layer = _layer(case, refine=True)
    f = _forward(layer)
    w = weights(f(values), rng)
    grads = _grads(layer, values, w)
    assert layer.info.derivative.method == ("lu",)
    gscale = max(1.0, max(np.abs(g).max() for g in grads))
    h = np.sqrt(np.finfo(np.float64).eps) * max(1.0, max(np.abs(v).max() for v in values))
    for _ in range(2):
        d = directions(case.parameters, values, rng)
        fd = central_difference(f, values, d, w, h=h)
        assert abs(directional(grads, d) - fd) <= 1e-5 * gscale * (1 + abs(fd))


@pytest.mark.parametrize("name", ["qp_param_P", "socp", "sdp", "gp"])
def test_jvp_is_adjoint_to_vjp(name):
    """⟨w, J d⟩ from mx.jvp equals ⟨Jᵀ w, d⟩ from mx.vjp."""
    case = CASES[name]()
    rng = np.random.default_rng(2)
    values = case.draw(rng)
    layer = _layer(case)
    primals = _mx(values)
    d = directions(case.parameters, values, rng)
    outs, touts = mx.jvp(lambda *p: layer(*p), primals, _mx(d))
    assert layer.info.derivative is not None
    w = weights(_np(outs), rng)
    _, cots = mx.vjp(lambda *p: layer(*p), primals, _mx(w))
    lhs = sum(float(np.sum(wk * t)) for wk, t in zip(w, _np(touts), strict=True))
    assert abs(lhs - directional(_np(cots), d)) <= 1e-9 * (1 + abs(lhs))


@pytest.mark.parametrize("name", ["lp", "logistic", "sdp"])
def test_grad_matches_torch(name):
    torch = pytest.importorskip("torch")
    from convexlayers.torch import CvxpyLayer as TorchLayer

    case = CASES[name]()
    rng = np.random.default_rng(3)
    values = case.draw(rng)
    w = weights(_forward(_layer(case))(values), rng)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    touts = TorchLayer(case.problem, case.parameters, case.variables, gp=case.gp)(*tensors)
    loss = sum((torch.tensor(wk) * o).sum() for wk, o in zip(w, touts, strict=True))
    expected = torch.autograd.grad(loss, tensors)
    for g, e in zip(_grads(_layer(case), values, w), expected, strict=True):
        np.testing.assert_allclose(g, e.numpy(), atol=1e-9 * (1 + e.abs().max().item()))


# -- batching, duals, gp -------------------------------------------------------------------
def _qp():
    n = 3
    x = cp.Variable(n)
    P, q = cp.Parameter((n, n), PSD=True), cp.Parameter(n)
    con = cp.sum(x) == 1
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), [con, x >= -1])
    return prob, P, q, x, con


def _psd(rng, *batch):
    F = rng.standard_normal((*batch, 3, 3))
    return F @ np.swapaxes(F, -1, -2) + np.eye(3)


def test_batched_equals_per_element_forward_and_gradients():
    prob, P, q, x, con = _qp()
    layer = CvxpyLayer(prob, [P, q], [x, con.dual_variables[0]])
    rng = np.random.default_rng(4)
    Pb, qb = _psd(rng, 4), rng.standard_normal((4, 3))
    xs, duals = layer(*_mx([Pb, qb]))
    assert xs.shape == (4, 3) and duals.shape == (4,)

    def loss(P, q):
        x, dual = layer(P, q)
        return x.sum() + (x * x).sum() + dual.sum()

    gP, gq = mx.grad(loss, argnums=(0, 1))(*_mx([Pb, qb]))
    for i in range(4):
        xi, di = layer(*_mx([Pb[i], qb[i]]))
        np.testing.assert_allclose(np.array(xi), np.array(xs[i]), atol=1e-10)
        np.testing.assert_allclose(np.array(di), np.array(duals[i]), atol=1e-10)
        gPi, gqi = mx.grad(loss, argnums=(0, 1))(*_mx([Pb[i], qb[i]]))
        np.testing.assert_allclose(np.array(gPi), np.array(gP[i]), atol=1e-9)
        np.testing.assert_allclose(np.array(gqi), np.array(gq[i]), atol=1e-9)


def test_unbatched_parameter_gets_the_summed_gradient():
    prob, P, q, x, _ = _qp()
    layer = CvxpyLayer(prob, [P, q], [x])
    rng = np.random.default_rng(5)
    P1, qb = _psd(rng), rng.standard_normal((3, 3))

    def loss(P, q):
        return (layer(P, q)[0] ** 2).sum()

    (xs,) = layer(*_mx([P1, qb]))
    assert xs.shape == (3, 3)
    gP = np.array(mx.grad(loss)(*_mx([P1, qb])))
    total = sum(np.array(mx.grad(loss)(*_mx([P1, qb[i]]))) for i in range(3))
    np.testing.assert_allclose(gP, total, atol=1e-9)
    np.testing.assert_allclose(gP, gP.T, atol=1e-12)  # a symmetric parameter's gradient


def test_duals_match_cvxpy():
    case = CASES["lp"]()
    values = case.draw(np.random.default_rng(6))
    x, dual = _forward(_layer(case))(values)
    case.set_values(values)
    case.problem.solve(solver="CLARABEL")
    np.testing.assert_allclose(x, case.variables[0].value, atol=1e-5)
    np.testing.assert_allclose(dual, case.problem.constraints[0].dual_value, atol=1e-5)
    assert np.abs(dual).max() > 1e-3  # an active constraint: the check means something


def test_gp_batched_against_cvxpy():
    case = CASES["gp"]()
    rng = np.random.default_rng(7)
    draws = [case.draw(rng) for _ in range(3)]
    batched = [np.stack(v) for v in zip(*draws, strict=True)]
    outs = _forward(_layer(case))(batched)
    for i, values in enumerate(draws):
        case.set_values(values)
        case.problem.solve(solver="CLARABEL", gp=True)
        for var, out in zip(case.variables, outs, strict=True):
            np.testing.assert_allclose(out[i], var.value, rtol=REFERENCE_ATOL)


# -- dtypes ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        (("float32", "float32"), "float32"),
        (("float64", "float64"), "float64"),
        (("float32", "float64"), "float64"),
        (("float16", "float16"), "float16"),
        (("bfloat16", "float32"), "float32"),
        (("int32", "int32"), "float32"),
    ],
)
def test_output_and_gradient_dtypes_follow_inputs(dtypes, expected):
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    rng = np.random.default_rng(8)
    raw = [rng.integers(-3, 4, (3, 2)), rng.integers(-3, 4, 3)]
    args = [mx.array(v).astype(getattr(mx, dt)) for v, dt in zip(raw, dtypes, strict=True)]
    (sol,) = layer(*args)
    assert sol.dtype == getattr(mx, expected)
    grads = mx.grad(lambda A, b: layer(A, b)[0].sum(), argnums=(0, 1))(*args)
    for g, a in zip(grads, args, strict=True):
        floating = mx.issubdtype(a.dtype, mx.floating)
        assert g.dtype == (a.dtype if floating else getattr(mx, expected))
    ref = np.array(layer(*_mx([np.array(a.astype(mx.float32)) for a in args]))[0])
    np.testing.assert_allclose(np.array(sol.astype(mx.float32)), ref,
                               atol=1e-2 if "16" in "".join(dtypes) else 1e-6)


def test_numpy_and_python_values_convert_like_mx_array():
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    rng = np.random.default_rng(9)
    A0, b0 = rng.standard_normal((3, 2)), rng.standard_normal(3)
    (from_numpy,) = layer(A0, b0.tolist())
    (from_mx,) = layer(mx.array(A0), mx.array(b0))
    assert from_numpy.dtype == mx.float32  # as mx.array(float64 NumPy array) gives
    np.testing.assert_array_equal(np.array(from_numpy), np.array(from_mx))


# -- failures, info, copies, transformations ---------------------------------------------
def _interval_layer(**kwargs):
    return CvxpyLayer(*interval(), **kwargs)


def _nansum(x):
    return mx.where(mx.isnan(x), 0.0, x).sum()


def test_on_failure_nan_gives_nan_outputs_and_zero_gradients():
    layer = _interval_layer(on_failure="nan")
    lo, hi = mx.array([0.0, 2.0, 0.0, 5.0], dtype=F64), mx.ones(4, dtype=F64)
    (x,) = layer(lo, hi)
    assert np.isnan(np.array(x)[[1, 3]]).all()
    np.testing.assert_allclose(np.array(x)[[0, 2]], 0.0, atol=1e-7)
    assert layer.info.failed == (1, 3)
    glo, ghi = mx.grad(lambda lo, hi: _nansum(layer(lo, hi)[0]), argnums=(0, 1))(lo, hi)
    np.testing.assert_allclose(np.array(glo), [1.0, 0.0, 1.0, 0.0], atol=1e-9)
    np.testing.assert_allclose(np.array(ghi), 0.0, atol=1e-9)
    with pytest.raises(SolverError, match=r"batch elements \[1: infeasible, 3: infeasible\]"):
        layer(lo, hi, on_failure="raise")


def test_info_records_the_forward_then_its_derivative():
    prob, P, q, x, _ = _qp()
    layer = CvxpyLayer(prob, [P, q], [x])
    assert layer.info is None
    rng = np.random.default_rng(10)
    args = _mx([_psd(rng), rng.standard_normal((3, 3))])
    layer(*args)
    info = layer.info
    assert info.status == (SolverStatus.OPTIMAL,) * 3 and info.ok
    assert (info.iterations > 0).all() and (info.solve_time > 0).all()
    assert (info.residual < 1e-6).all() and info.derivative is None
    mx.grad(lambda P, q: layer(P, q)[0].sum())(*args)
    assert layer.info.derivative.method == ("lu",) * 3
    assert (layer.info.derivative.residual < 1e-10).all()
    layer(*args, solver_args={"solve_method": "SCS"})
    assert layer.info.solver == "SCS" and layer.info.derivative is None


def test_pickle_and_deepcopy_give_working_independent_layers():
    prob, P, q, x, _ = _qp()
    layer = CvxpyLayer(prob, [P, q], [x])
    rng = np.random.default_rng(11)
    args = _mx([_psd(rng), rng.standard_normal(3)])

    def value_and_grad(lay):
        return mx.value_and_grad(lambda P, q: (lay(P, q)[0] ** 3).sum(), argnums=(0, 1))(*args)

    v, (gP, gq) = value_and_grad(layer)
    for clone in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
        assert clone is not layer and clone._map is not layer._map
        v2, (gP2, gq2) = value_and_grad(clone)
        np.testing.assert_allclose(np.array(v2), np.array(v), atol=1e-12)
        np.testing.assert_allclose(np.array(gP2), np.array(gP), atol=1e-10)
        np.testing.assert_allclose(np.array(gq2), np.array(gq), atol=1e-10)
    copied = copy.deepcopy(layer)
    copied(*_mx([_psd(rng, 2), rng.standard_normal((2, 3))]))
    assert len(copied.info.status) == 2 and len(layer.info.status) == 1


def test_training_an_mlx_module_through_the_layer():
    """nn.value_and_grad on a model holding the layer: learn q so the QP hits a target."""
    prob, P, q, x, _ = _qp()

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = mx.zeros(3)
            self.layer = CvxpyLayer(prob, [P, q], [x])

        def __call__(self, P):
            return self.layer(P, self.q)[0]

    model = Model()
    assert [k for k, _ in tree_flatten(model.trainable_parameters())] == ["q"]
    target, P_v = mx.array([0.6, 0.3, 0.1]), mx.eye(3)
    step = nn.value_and_grad(model, lambda m: ((m(P_v) - target) ** 2).sum())
    losses = []
    for _ in range(30):
        loss, grads = step(model)
        model.update({"q": model.q - 0.5 * grads["q"]})
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]


def test_threads_share_one_layer():
    """Each call keeps its state in its own closure: concurrent gradients equal serial ones."""
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    rng = np.random.default_rng(12)
    values = [_mx([rng.standard_normal((3, 2)), rng.standard_normal(3)]) for _ in range(8)]
    grad = mx.grad(lambda A, b: (layer(A, b)[0] ** 2).sum(), argnums=(0, 1))

    def work(i):
        return np.concatenate([np.array(g).ravel() for g in grad(*values[i])])

    serial = [work(i) for i in range(8)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(work, range(8)))
    np.testing.assert_array_equal(np.stack(threaded), np.stack(serial))


@pytest.mark.parametrize("transform", ["vmap", "compile"])
def test_vmap_and_compile_are_refused_clearly(transform):
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    fn = getattr(mx, transform)(lambda A: layer(A, mx.ones(3))[0])
    with pytest.raises(NotImplementedError, match=r"cannot run inside mx.compile or mx.vmap.*"
                                                  r"leading batch dimension"):
        fn(mx.ones((4, 3, 2)) if transform == "vmap" else mx.ones((3, 2)))


# -- the bad-input table -------------------------------------------------------------------
def _value(value):
    """A table value as a caller would pass it: float64 NumPy arrays as float64 MLX arrays
    (the layer, like mx.array, would take them as float32); other NumPy arrays as they are,
    for the layer to convert."""
    if isinstance(value, Raw):
        return value.value
    value = np.asarray(value)
    return mx.array(value, dtype=F64) if value.dtype == np.float64 else value


def _run(row: CallRow) -> Result:
    args, kwargs = row.layer()
    layer = CvxpyLayer(*args, **kwargs)
    values = [_value(v) for v in row.values()]
    grads = None
    if row.probe == "forward":
        outs = layer(*values, **row.call)
    else:
        argnums = tuple(range(len(values)))

        def loss(*vals):
            outs = layer(*vals, **row.call)
            return outs[0].sum(), outs

        fn = mx.value_and_grad(loss, argnums=argnums)
        if row.probe == "hessian":
            mx.grad(lambda *v: sum(g.sum() for g in fn(*v)[1]), argnums=argnums)(*values)
        (_, outs), grads = fn(*values)
        grads = _np(grads)
    return Result(_np(outs), [str(o.dtype).removeprefix("mlx.core.") for o in outs], grads)


@pytest.mark.parametrize("row", CALL_ROWS, ids=row_id)
def test_bad_call(row):
    check_row(row, lambda: _run(row), lambda: row.error)


@pytest.mark.parametrize("row", BUILD_ROWS, ids=row_id)
def test_bad_construction(row):
    args, kwargs = row.build()
    with pytest.raises(row.error, match=row.match):
        CvxpyLayer(*args, **kwargs)


def test_value_errors_come_before_any_solve():
    """A NaN in one element and a wrong dtype in another: nothing is solved, info stays None."""
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    b_nan = mx.array([[1.0, 1.0, 1.0], [np.nan, 1.0, 1.0]])
    with pytest.raises(ParameterError, match=r"'b': contains NaN or Inf in batch elements \[1\]"):
        layer(mx.ones((2, 3, 2)), b_nan)
    with pytest.raises(ParameterError, match=r"'A': expected real numbers, received .*complex64"):
        layer(mx.ones((3, 2), dtype=mx.complex64), mx.ones(3))
    assert layer.info is None
