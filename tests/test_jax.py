"""JAX layer: the README example, forward against CVXPY, gradients, dtypes, solvers.

Transformations (jit, vmap, ...) are in test_jax_transforms.py, errors in
test_jax_errors.py. Gradient checks use ``refine=True``: finite differences need
forward solves far more accurate than a solver's default tolerance.
"""

from __future__ import annotations

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from convexlayers.jax import CvxpyLayer
from zoo import CASES, REFERENCE_ATOL

jax.config.update("jax_enable_x64", True)


def _make(case, **kwargs):
    return CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp, **kwargs)


def _symmetrized(layer, case):
    """The layer as a function that keeps symmetric/PSD parameters symmetric under FD."""
    sym = [p.attributes["symmetric"] or p.attributes["PSD"] for p in case.parameters]

    def f(*values):
        return layer(*[0.5 * (v + v.T) if s else v for v, s in zip(values, sym, strict=True)])

    return f


@pytest.fixture
def x32():
    """Run a test in JAX's default 32-bit mode, as the cvxpylayers README does."""
    jax.config.update("jax_enable_x64", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", True)


def test_readme_example(x32):
    n, m = 2, 3
    x = cp.Variable(n)
    A = cp.Parameter((m, n))
    b = cp.Parameter(m)
    constraints = [x >= 0]
    objective = cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1))
    problem = cp.Problem(objective, constraints)
    assert problem.is_dpp()
    cvxpylayer = CvxpyLayer(problem, parameters=[A, b], variables=[x])
    key = jax.random.PRNGKey(0)
    key, k1, k2 = jax.random.split(key, 3)
    A_jax = jax.random.normal(k1, shape=(m, n))
    b_jax = jax.random.normal(k2, shape=(m,))
    solution, = cvxpylayer(A_jax, b_jax)
    dcvxpylayer = jax.grad(lambda A, b: sum(cvxpylayer(A, b)[0]), argnums=[0, 1])
    gradA, gradb = dcvxpylayer(A_jax, b_jax)

    assert solution.dtype == gradA.dtype == gradb.dtype == jnp.float32
    assert gradA.shape == (m, n) and gradb.shape == (m,)
    A.value, b.value = np.asarray(A_jax, np.float64), np.asarray(b_jax, np.float64)
    problem.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(solution, x.value, atol=1e-5)
    jitted = jax.jit(dcvxpylayer)(A_jax, b_jax)
    for g, j in zip((gradA, gradb), jitted, strict=True):
        np.testing.assert_allclose(j, g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_forward_matches_cvxpy(name):
    case = CASES[name]()
    values = case.draw(np.random.default_rng(0))
    outs = _make(case)(*map(jnp.asarray, values))
    case.set_values(values)
    case.problem.solve(solver=cp.CLARABEL, gp=case.gp)
    for var, out in zip(case.variables, outs, strict=True):
        ref = np.reshape(var.value, out.shape)
        assert out.dtype == jnp.float64
        np.testing.assert_allclose(out, ref, atol=REFERENCE_ATOL * (1 + np.abs(ref).max()))


@pytest.mark.parametrize("name", list(CASES))
def test_check_grads(name):
    """JAX's own checker, forward and reverse mode, against finite differences."""
    case = CASES[name]()
    values = [jnp.asarray(v) for v in case.draw(np.random.default_rng(2))]
    f = _symmetrized(_make(case, refine=True), case)
    check_grads(f, values, order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_grad_matches_torch(name):
    torch = pytest.importorskip("torch")
    from convexlayers.torch import CvxpyLayer as TorchLayer

    case = CASES[name]()
    rng = np.random.default_rng(3)
    values = case.draw(rng)
    layer = _make(case, refine=True)
    w = [rng.standard_normal(np.shape(o)) for o in layer(*map(jnp.asarray, values))]

    def loss(*ps):
        return sum(jnp.sum(wk * o) for wk, o in zip(w, layer(*ps), strict=True))

    grads = jax.grad(loss, argnums=tuple(range(len(values))))(*map(jnp.asarray, values))
    tlayer = TorchLayer(case.problem, case.parameters, case.variables, gp=case.gp, refine=True)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    tloss = sum((torch.tensor(wk) * o).sum() for wk, o in zip(w, tlayer(*tensors), strict=True))
    for g, t in zip(grads, torch.autograd.grad(tloss, tensors), strict=True):
        np.testing.assert_allclose(g, t.numpy(), rtol=1e-7, atol=1e-9)


def test_float32_inputs_give_float32_outputs_and_grads():
    case = CASES["socp"]()
    values = case.draw(np.random.default_rng(4))
    layer = _make(case, refine=True)
    ref = layer(*map(jnp.asarray, values))
    low = layer(*[jnp.asarray(v, jnp.float32) for v in values])
    for r, lo in zip(ref, low, strict=True):
        assert lo.dtype == jnp.float32
        np.testing.assert_allclose(lo, r, atol=1e-5)

    def loss(*ps):
        return sum(jnp.sum(o) for o in layer(*ps))

    g64 = jax.grad(loss, argnums=(0, 1, 2))(*map(jnp.asarray, values))
    g32 = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*[jnp.asarray(v, jnp.float32)
                                                        for v in values])
    for a, b in zip(g64, g32, strict=True):
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["lp", "qp_param_P", "socp", "logistic"])
def test_32_bit_mode_backward_at_the_rounded_point(name):
    """In JAX's 32-bit mode the forward's state travels as float32; the backward trusts
    the forward's residual and differentiates at that rounded point without polishing
    again. Its gradients match 64-bit mode's to float32 accuracy."""
    case = CASES[name]()
    values = case.draw(np.random.default_rng(9))
    layer = _make(case)

    def loss(*ps):
        return sum(jnp.sum(jnp.sin(o)) for o in layer(*ps))

    g64 = jax.grad(loss, argnums=tuple(range(len(values))))(*map(jnp.asarray, values))
    jax.config.update("jax_enable_x64", False)
    try:
        g32 = jax.jit(jax.grad(loss, argnums=tuple(range(len(values)))))(
            *[jnp.asarray(v, jnp.float32) for v in values])
    finally:
        jax.config.update("jax_enable_x64", True)
    for a, b in zip(g64, g32, strict=True):
        assert b.dtype == jnp.float32
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4 * (1 + np.abs(a).max()))


def test_mixed_and_integer_dtypes_promote():
    case = CASES["least_squares"]()
    A, b = case.draw(np.random.default_rng(5))
    layer = _make(case)
    x, = layer(jnp.asarray(A, jnp.float32), jnp.asarray(b, jnp.float64))
    assert x.dtype == jnp.float64
    x, = layer(jnp.ones((6, 3), jnp.int32), jnp.arange(6))
    assert x.dtype == jnp.float64


@pytest.mark.parametrize("solver", ["CLARABEL", "SCS", "ECOS"])
def test_solver_choice(solver):
    case = CASES["readme"]()
    values = [jnp.asarray(v) for v in case.draw(np.random.default_rng(6))]
    ref = _make(case, refine=True)(*values)[0]
    layer = _make(case, solver=solver, solver_args={"eps": 1e-9} if solver == "SCS" else None)
    out = layer(*values)[0]
    assert layer.info.solver == solver
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_per_call_solver_args_switch_backend_under_jit_and_grad():
    case = CASES["lp"]()
    values = [jnp.asarray(v) for v in case.draw(np.random.default_rng(7))]
    layer = _make(case)

    def loss(*ps, solver_args=None):
        x, lam = layer(*ps, solver_args=solver_args)
        return jnp.sum(x) + jnp.sum(lam**2)

    ref = jax.grad(loss, argnums=(0, 1, 2))(*values)
    ecos = jax.jit(jax.grad(lambda *ps: loss(*ps, solver_args={"solve_method": "ECOS"}),
                            argnums=(0, 1, 2)))(*values)
    assert layer.info.solver == "ECOS"
    for a, b in zip(ref, ecos, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    scs = layer(*values, solver_args={"solve_method": "SCS", "eps": 1e-10})
    assert layer.info.solver == "SCS"
    np.testing.assert_allclose(scs[0], layer(*values)[0], atol=1e-6)


def test_info_reflects_the_last_executed_call():
    case = CASES["least_squares"]()
    A, b = case.draw(np.random.default_rng(8))
    layer = _make(case)
    assert layer.info is None
    f = jax.jit(lambda A, b: layer(A, b)[0])
    jax.block_until_ready(f(jnp.stack([A] * 3), jnp.asarray(b)))
    assert len(layer.info.status) == 3 and layer.info.ok
    jax.block_until_ready(f(jnp.asarray(A), jnp.asarray(b)))
    assert len(layer.info.status) == 1
    jax.block_until_ready(jax.grad(lambda b: jnp.sum(f(jnp.asarray(A), b)))(jnp.asarray(b)))
    assert layer.info.derivative is not None


def test_outputs_are_a_tuple_of_arrays():
    case = CASES["lp"]()
    outs = _make(case)(*map(jnp.asarray, case.draw(np.random.default_rng(9))))
    assert isinstance(outs, tuple) and len(outs) == 2
    assert all(isinstance(o, jax.Array) for o in outs)
