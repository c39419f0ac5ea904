"""Problems without constraints: cone programs with m = 0 rows.

CVXPY keeps ``0.5 * sum_squares(x) + q @ x`` or ``quad_form(x, Q) + q @ x`` as a bare
QP (P, q) with an empty A for solvers that take a quadratic objective (Clarabel, SCS, NATIVE);
for ECOS it lifts the square into a second-order cone, so m > 0 there. The layer used to
fail to build on the empty constraint list (the retrieval map split y into one piece
too many).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers.solvers import available_solvers
from convexlayers.torch import CvxpyLayer
from fd import central_difference, directional, directions, weights

# Accuracy of x at a backend's default tolerance, as in test_torch_gradients.py. ECOS
# solves the SOC-lifted problem, where its default 1e-8 gap leaves x off by ~1e-4.
DEFAULT_ACCURACY = {"CLARABEL": 1e-6, "SCS": 2e-3, "ECOS": 1e-3, "NATIVE": 1e-6}


@dataclass
class Unconstrained:
    """An unconstrained problem, its layer arguments, a value generator and its solution."""

    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]
    draw: Callable[[np.random.Generator], list[np.ndarray]]
    solution: Callable[..., list[np.ndarray]]
    solvers: tuple[str, ...] = ("CLARABEL", "SCS", "ECOS", "NATIVE")


def _spd(rng, n):
    L = rng.standard_normal((n, n))
    return L @ L.T + n * np.eye(n)


def sum_squares() -> Unconstrained:
    x, q = cp.Variable(3), cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x))
    return Unconstrained(prob, [q], [x], lambda r: [r.standard_normal(3)], lambda q: [-q])


def quad_form() -> Unconstrained:
    x, q, Q = cp.Variable(3), cp.Parameter(3), cp.Parameter((3, 3), PSD=True)
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x))
    # ECOS cannot take a parametric quad_form: CVXPY would have to lift it with Q inside.
    return Unconstrained(prob, [Q, q], [x], lambda r: [_spd(r, 3), r.standard_normal(3)],
                         lambda Q, q: [-np.linalg.solve(Q, q)],
                         solvers=("CLARABEL", "SCS", "NATIVE"))


def scaled_two_variables() -> Unconstrained:
    """lam * ||x||² + ||Y||_F² - q·x - <C, Y>: a parametric P and a matrix variable."""
    x, Y = cp.Variable(3), cp.Variable((2, 2))
    lam, q, C = cp.Parameter(nonneg=True), cp.Parameter(3), cp.Parameter((2, 2))
    obj = lam * cp.sum_squares(x) + cp.sum_squares(Y) - q @ x - cp.trace(C.T @ Y)
    return Unconstrained(
        cp.Problem(cp.Minimize(obj)), [lam, q, C], [x, Y],
        lambda r: [np.array(r.uniform(0.5, 2.0)), r.standard_normal(3), r.standard_normal((2, 2))],
        lambda lam, q, C: [q / (2 * lam), C / 2],
    )


CASES = {f.__name__: f for f in (sum_squares, quad_form, scaled_two_variables)}
CASE_SOLVERS = [(name, s) for name, make in CASES.items() for s in make().solvers
                if s in available_solvers()]


def _forward(layer, values):
    with torch.no_grad():
        return [o.numpy() for o in layer(*[torch.tensor(v) for v in values])]


def _grads(layer, values, w):
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    loss = sum((torch.tensor(wk) * o).sum() for wk, o in zip(w, layer(*tensors), strict=True))
    return [g.numpy() for g in torch.autograd.grad(loss, tensors)]


def test_clarabel_and_scs_see_no_constraint_rows():
    """The premise of this file: CVXPY emits m = 0 for these problems."""
    for make in CASES.values():
        case = make()
        for p, v in zip(case.parameters, case.draw(np.random.default_rng(0)), strict=True):
            p.value = v
        for solver in (cp.CLARABEL, cp.SCS):
            assert case.problem.get_problem_data(solver)[0]["A"].shape[0] == 0


@pytest.mark.parametrize(("name", "solver"), CASE_SOLVERS)
def test_forward_matches_cvxpy_and_the_closed_form(name, solver):
    case = CASES[name]()
    values = case.draw(np.random.default_rng(0))
    outs = _forward(CvxpyLayer(case.problem, case.parameters, case.variables,
                               solver=solver), values)
    for p, v in zip(case.parameters, values, strict=True):
        p.value = v
    # CVXPY's own SCS interface fails on m = 0 ("m must be a positive integer"), and
    # NATIVE is ours; the closed-form solution is the reference there.
    cvxpy_too = solver not in ("SCS", "NATIVE")
    if cvxpy_too:
        case.problem.solve(solver=solver)
    exact = case.solution(*values)
    for var, out, ref in zip(case.variables, outs, exact, strict=True):
        tol = DEFAULT_ACCURACY[solver] * (1 + np.abs(ref).max())
        if cvxpy_too:
            np.testing.assert_allclose(out, var.value, atol=tol)
        np.testing.assert_allclose(out, ref, atol=tol)
    refined = _forward(CvxpyLayer(case.problem, case.parameters, case.variables,
                                  solver=solver, refine=True), values)
    for out, ref in zip(refined, exact, strict=True):
        np.testing.assert_allclose(out, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("name", "solver"), CASE_SOLVERS)
def test_gradient_matches_finite_differences(name, solver):
    """Reverse mode against central differences with step sqrt(eps) * scale (float64)."""
    case = CASES[name]()
    rng = np.random.default_rng(1)
    values = case.draw(rng)
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver=solver,
                       refine=True)
    outs = _forward(layer, values)
    w = weights(outs, rng)
    grads = _grads(layer, values, w)
    scale = 1 + max(np.abs(v).max() for v in values)
    h = np.sqrt(np.finfo(float).eps) * scale
    for _ in range(3):
        d = directions(case.parameters, values, rng)
        fd = central_difference(lambda v: _forward(layer, v), values, d, w, h)
        np.testing.assert_allclose(directional(grads, d), fd, rtol=1e-6, atol=1e-7)


def test_gradient_is_the_closed_form_one():
    """L = wᵀx with x = -Q⁻¹q: dL/dq = -u and dL/dQ = -(u xᵀ + x uᵀ)/2, u = Q⁻¹w."""
    case = quad_form()
    rng = np.random.default_rng(2)
    Q, q = case.draw(rng)
    w = rng.standard_normal(3)
    layer = CvxpyLayer(case.problem, case.parameters, case.variables)
    gQ, gq = _grads(layer, [Q, q], [w])
    u = np.linalg.solve(Q, w)
    x = -np.linalg.solve(Q, q)
    np.testing.assert_allclose(gq, -u, atol=1e-8)
    np.testing.assert_allclose(gQ, -0.5 * (np.outer(u, x) + np.outer(x, u)), atol=1e-8)


def test_batched_values():
    """A batch of q with one shared Q: each element, and the shared gradient summed."""
    case = quad_form()
    rng = np.random.default_rng(3)
    Q = case.draw(rng)[0]
    qs = rng.standard_normal((4, 3))
    layer = CvxpyLayer(case.problem, case.parameters, case.variables)
    x, = _forward(layer, [Q, qs])
    np.testing.assert_allclose(x, -np.linalg.solve(Q, qs.T).T, atol=1e-8)
    w = rng.standard_normal((4, 3))
    gQ, gq = _grads(layer, [Q, qs], [w])
    parts = [_grads(layer, [Q, qs[i]], [w[i]]) for i in range(4)]
    np.testing.assert_allclose(gQ, sum(p[0] for p in parts), atol=1e-10)
    np.testing.assert_allclose(gq, np.stack([p[1] for p in parts]), atol=1e-10)


def test_jax_check_grads():
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    from convexlayers.jax import CvxpyLayer as JaxLayer

    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        case = scaled_two_variables()
        values = [jax.numpy.asarray(v) for v in case.draw(np.random.default_rng(4))]
        layer = JaxLayer(case.problem, case.parameters, case.variables, refine=True)
        check_grads(layer, values, order=1, modes=("fwd", "rev"), eps=1e-6, atol=1e-6,
                    rtol=1e-6)
    finally:
        jax.config.update("jax_enable_x64", x64)
