"""The default adjoint: exact outputs, a backward that reuses the forward's factorization,
singular KKT systems on the fast path, and no silently wrong derivative.

The adjoint object (``adjoint=ImplicitAdjoint(...)``) is checked in every framework;
``gradcheck`` and ``check_grads`` run at their default settings on the whole zoo.
"""

from __future__ import annotations

import cvxpy as cp
import jax
import numpy as np
import pytest
import torch
from jax.test_util import check_grads

from convexlayers import InaccurateSolutionWarning, SolverArgumentError
from convexlayers.derivative import AbstractLinearSolver, ImplicitAdjoint, SparseLU
from convexlayers.derivative._linear import FactorStore
from convexlayers.jax import CvxpyLayer as JaxLayer
from convexlayers.torch import CvxpyLayer
from zoo import CASES

jax.config.update("jax_enable_x64", True)


def _zoo_inputs(case, rng, batch=None):
    values = case.draw(rng)
    if batch:
        values = [np.stack([v] + [case.draw(rng)[i] for _ in range(batch - 1)])
                  for i, v in enumerate(values)]
    return values


def _symmetrize(case, values):
    sym = [p.attributes["symmetric"] or p.attributes["PSD"] for p in case.parameters]
    return [0.5 * (v + np.swapaxes(v, -1, -2)) if s else v for v, s in zip(values, sym,
                                                                           strict=True)]


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_at_torch_defaults(name):
    """torch.autograd.gradcheck with its default eps, atol and rtol, layer defaults."""
    case = CASES[name]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp)
    values = _symmetrize(case, _zoo_inputs(case, np.random.default_rng(0)))
    sym = [p.attributes["symmetric"] or p.attributes["PSD"] for p in case.parameters]

    def f(*ts):
        ts = [0.5 * (t + t.mT) if s else t for t, s in zip(ts, sym, strict=True)]
        return layer(*ts)

    inputs = [torch.tensor(v, requires_grad=True) for v in values]
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize("name", list(CASES))
def test_check_grads_at_jax_defaults(name):
    case = CASES[name]()
    layer = JaxLayer(case.problem, case.parameters, case.variables, gp=case.gp)
    values = _symmetrize(case, _zoo_inputs(case, np.random.default_rng(1)))
    sym = [p.attributes["symmetric"] or p.attributes["PSD"] for p in case.parameters]

    def f(*vs):
        return layer(*[0.5 * (v + v.T) if s else v for v, s in zip(vs, sym, strict=True)])

    check_grads(f, values, order=1, modes=["rev"])


def test_outputs_are_exact_on_the_exponential_cone():
    """Clarabel alone is off by ~1e-6 here; the default layer agrees with a reference
    solved at 1e-12 and polished, and its KKT residual is at machine precision."""
    case = CASES["logistic"]()
    values = case.draw(np.random.default_rng(2))
    (w,) = CvxpyLayer(case.problem, case.parameters, case.variables)(
        *[torch.tensor(v) for v in values])
    case.set_values(values)
    case.problem.solve(solver=cp.CLARABEL, tol_gap_abs=1e-12, tol_gap_rel=1e-12,
                       tol_feas=1e-12, max_iter=500)
    np.testing.assert_allclose(w.numpy(), case.variables[0].value, atol=1e-9)
    raw = CvxpyLayer(case.problem, case.parameters, case.variables, refine=False)
    raw(*[torch.tensor(v) for v in values])
    assert raw.info.residual.max() > 1e-10  # the premise: the solver's point is not exact


def _projection(gap: float, seed: int):
    """Project p onto {Gx <= h}: rows 0, 1 active, row 2 inactive by ``gap``."""
    n, m = 5, 3
    x, p = cp.Variable(n), cp.Parameter(n)
    G, h = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [G @ x <= h])
    rng = np.random.default_rng(seed)
    Gv, xs = rng.standard_normal((m, n)), rng.standard_normal(n)
    hv = Gv @ xs
    hv[2] += gap
    pv = xs + 0.5 * Gv.T @ np.array([1.0, 0.5, 0.0])
    exact = np.eye(n) - np.linalg.pinv(Gv[:2]) @ Gv[:2]
    return prob, [p, G, h], [x], [pv, Gv, hv], exact


@pytest.mark.parametrize("solver", ["CLARABEL", "SCS"])
@pytest.mark.parametrize("gap", [1e-5, 1e-9])
def test_almost_active_constraint_gives_the_exact_jacobian(solver, gap):
    """Without polishing, SCS at eps=1e-9 gets O(1)-wrong Jacobians here (2 of 20 seeds
    at gap 1e-9); the default layer gets every one exact, without a warning."""
    for seed in range(10):
        prob, params, variables, values, exact = _projection(gap, seed)
        layer = CvxpyLayer(prob, params, variables, solver=solver)
        rest = [torch.tensor(v) for v in values[1:]]
        jac = torch.autograd.functional.jacobian(
            lambda q, layer=layer, rest=rest: layer(q, *rest, solver_args={"eps": 1e-9})[0],
            torch.tensor(values[0]))
        np.testing.assert_allclose(jac.numpy(), exact, atol=1e-8)


def _count_factorizations(monkeypatch) -> list[int]:
    calls = [0]
    original = AbstractLinearSolver.factor

    def counting(self, J):
        calls[0] += 1
        return original(self, J)

    monkeypatch.setattr(AbstractLinearSolver, "factor", counting)
    return calls


def test_backward_reuses_the_forward_factorization(monkeypatch):
    case = CASES["socp"]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables)
    rng = np.random.default_rng(3)
    tensors = [torch.tensor(v, requires_grad=True) for v in _zoo_inputs(case, rng, batch=4)]
    calls = _count_factorizations(monkeypatch)
    outs = layer(*tensors)
    forward = calls[0]
    assert forward >= 1  # polishing factored J
    sum(o.sum() for o in outs).backward()
    assert calls[0] == forward  # the backward factored nothing
    assert set(layer.info.derivative.method) == {"lu"}


def test_backward_does_not_measure_again_what_the_forward_found_exact(monkeypatch):
    """The forward's residuals travel with the state: where every element's is within
    the target, the backward neither polishes nor recomputes the KKT residual (a third
    of a small problem's backward); the derivative's point is the forward's."""
    case = CASES["socp"]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables)
    tensors = [torch.tensor(v, requires_grad=True)
               for v in _zoo_inputs(case, np.random.default_rng(8), batch=3)]
    outs = layer(*tensors)
    measured = []
    real = ImplicitAdjoint.improve
    monkeypatch.setattr(ImplicitAdjoint, "improve",
                        lambda self, *a, **k: measured.append(1) or real(self, *a, **k))
    sum(o.sum() for o in outs).backward()
    assert not measured
    info = layer.info
    assert (info.residual <= 1e-9).all()
    np.testing.assert_array_equal(info.derivative.kkt_residual, info.residual)


def test_derivative_polishing_factors_once_per_step(monkeypatch):
    """With polish="derivative" the backward polishes, and the derivative reuses the last
    Newton step's factorization: no factorization beyond the polishing steps."""
    case = CASES["logistic"]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables,
                       adjoint=ImplicitAdjoint(polish="derivative"))
    tensors = [torch.tensor(v, requires_grad=True)
               for v in _zoo_inputs(case, np.random.default_rng(4), batch=3)]
    calls = _count_factorizations(monkeypatch)
    (w,) = layer(*tensors)
    assert calls[0] == 0
    w.sum().backward()
    assert 1 <= calls[0] <= 3  # Newton steps; none added by the derivative


def test_later_newton_steps_reuse_the_first_steps_factorization(monkeypatch):
    """Polishing's second Newton step (from about 1e-11, J barely changed) solves with
    the first step's factors refined against its own J: one factorization in all, and
    the same exact point."""
    import convexlayers.derivative._refine as refine_module

    case = CASES["logistic"]()
    tensors = [torch.tensor(v) for v in _zoo_inputs(case, np.random.default_rng(4), batch=4)]
    steps = []
    real_search = refine_module._line_search
    monkeypatch.setattr(refine_module, "_line_search",
                        lambda *a: steps.append(a[2].size) or real_search(*a))
    calls = _count_factorizations(monkeypatch)
    layer = CvxpyLayer(case.problem, case.parameters, case.variables)
    (w,) = layer(*tensors)
    assert len(steps) >= 2  # a second Newton step was taken
    assert calls[0] == 1
    assert (layer.info.residual <= 1e-13).all()
    # Without the previous step's factors (the backward is not run here).
    monkeypatch.setattr(FactorStore, "take", lambda self, idx: FactorStore(len(idx)))
    steps.clear()
    (fresh,) = CvxpyLayer(case.problem, case.parameters, case.variables)(*tensors)
    assert calls[0] == 1 + len(steps)  # each step its own factorization, as before
    torch.testing.assert_close(w, fresh, atol=1e-12, rtol=0)


def _auxiliary_null_space():
    """`norm(x) <= 10` inactive: CVXPY's epigraph variable t is free, J is singular."""
    x = cp.Variable(4)
    A, b = cp.Parameter((6, 4)), cp.Parameter(6)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b)), [cp.norm(x) <= 10])
    rng = np.random.default_rng(5)
    return prob, [A, b], [x], [rng.standard_normal((6, 4)), rng.standard_normal(6)]


def test_singular_jacobian_with_auxiliary_null_space_stays_on_the_fast_path():
    prob, params, variables, values = _auxiliary_null_space()
    layer = CvxpyLayer(prob, params, variables)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    (x,) = layer(*tensors)
    w = torch.arange(1.0, 5.0, dtype=torch.float64)
    _, gb = torch.autograd.grad((w * x).sum(), tensors)
    assert layer.info.derivative.method == ("lu",)  # no least squares
    assert layer.info.derivative.refinements[0] >= 1  # refined against the singular J
    # x = argmin ‖Ax − b‖²: dx/db = A⁺, so the gradient wrt b is (A⁺)ᵀ w.
    np.testing.assert_allclose(gb.numpy(), np.linalg.pinv(values[0]).T @ w.numpy(),
                               atol=1e-9)


def test_null_space_in_a_requested_output_is_reported():
    """min x0 s.t. x0 >= a, 0 <= x1 <= 1: x1 is not unique, so its derivative does not
    exist; least squares gives one and the residual says so."""
    x, a = cp.Variable(2), cp.Parameter()
    prob = cp.Problem(cp.Minimize(x[0]), [x[0] >= a, x[1] >= 0, x[1] <= 1])
    layer = CvxpyLayer(prob, [a], [x])
    at = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    (xs,) = layer(at)
    xs.sum().backward()
    assert abs(float(xs.detach()[0]) - 0.5) < 1e-9
    d = layer.info.derivative
    assert d.method == ("lstsq",) or d.residual[0] > 1e-6
    assert np.isfinite(at.grad.numpy())


def test_adjoint_object_in_every_framework():
    tf = pytest.importorskip("tensorflow")
    from convexlayers.tensorflow import CvxpyLayer as TFLayer

    prob, params, variables, values = _auxiliary_null_space()
    adjoint = ImplicitAdjoint(linear_solver=SparseLU(), polish="derivative")
    w = np.arange(1.0, 5.0)
    ref = torch.autograd.grad(
        (torch.tensor(w) * CvxpyLayer(prob, params, variables)(
            *(ts := [torch.tensor(v, requires_grad=True) for v in values]))[0]).sum(), ts)
    t_layer = CvxpyLayer(prob, params, variables, adjoint=adjoint)
    j_layer = JaxLayer(prob, params, variables, adjoint=adjoint)
    f_layer = TFLayer(prob, params, variables, adjoint=adjoint)
    g_t = torch.autograd.grad((torch.tensor(w) * t_layer(*ts)[0]).sum(), ts)
    g_j = jax.grad(lambda *v: (w * j_layer(*v)[0]).sum(), argnums=(0, 1))(*values)
    tv = [tf.constant(v) for v in values]
    with tf.GradientTape() as tape:
        tape.watch(tv)
        loss = tf.reduce_sum(w * f_layer(*tv)[0])
    g_f = tape.gradient(loss, tv)
    for layer in (t_layer, j_layer, f_layer):
        assert layer.info.derivative.method == ("sparse_lu",)
    for r, a, b, c in zip(ref, g_t, g_j, g_f, strict=True):
        for g in (a.numpy(), np.asarray(b), c.numpy()):
            np.testing.assert_allclose(g, r.numpy(), atol=1e-9)


def test_bad_adjoint_arguments():
    prob, params, variables, _ = _auxiliary_null_space()
    with pytest.raises(SolverArgumentError, match="polish must be True, False or 'derivative'"):
        ImplicitAdjoint(polish="sometimes")
    with pytest.raises(SolverArgumentError, match=r"either adjoint=.* or the shorthands"):
        CvxpyLayer(prob, params, variables, adjoint=ImplicitAdjoint(), refine=True)
    with pytest.raises(SolverArgumentError, match="expected an AbstractAdjoint"):
        CvxpyLayer(prob, params, variables, adjoint="implicit")


def test_unreachable_target_warns_and_names_the_elements():
    """Where polishing and the tighter second solve cannot reach the adjoint's target,
    the call warns, naming the elements and the residual, and info shows it."""
    prob, params, variables, values = _auxiliary_null_space()
    layer = CvxpyLayer(prob, params, variables, adjoint=ImplicitAdjoint(target=1e-30))
    batch = [torch.tensor(np.stack([v, v])) for v in values]
    with pytest.warns(InaccurateSolutionWarning,
                      match=r"batch elements \[0, 1\] could not be made exact"):
        layer(*batch)
    assert (layer.info.residual > 1e-30).all() and (layer.info.residual < 1e-12).all()
    # The default target is met without a warning (warnings are errors in the tests).
    CvxpyLayer(prob, params, variables)(*batch)


def test_inline_layer_survives_until_its_backward():
    prob, params, variables, values = _auxiliary_null_space()
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    loss = CvxpyLayer(prob, params, variables)(*tensors)[0].sum()
    import gc

    gc.collect()
    loss.backward()
    assert torch.isfinite(tensors[0].grad).all()


def test_jax_jacrev_and_jacfwd_reuse_one_factorization(monkeypatch):
    """vmap over cotangents (jacrev) or tangents (jacfwd) only: one solve per column with
    the forward's factorization, not a factorization of V copies of the batch."""
    prob, params, variables, values = _auxiliary_null_space()
    layer = JaxLayer(prob, params, variables)
    calls = _count_factorizations(monkeypatch)
    jac_rev = jax.jacrev(lambda b: layer(values[0], b)[0])(values[1])
    assert calls[0] == 1  # the forward's polishing; the 4 cotangents factor nothing
    calls[0] = 0
    jac_fwd = jax.jacfwd(lambda b: layer(values[0], b)[0])(values[1])
    assert calls[0] == 1
    np.testing.assert_allclose(np.asarray(jac_rev), np.linalg.pinv(values[0]), atol=1e-9)
    np.testing.assert_allclose(np.asarray(jac_fwd), np.asarray(jac_rev), atol=1e-12)


def test_a_solver_that_stops_short_is_retried_by_another():
    """Clarabel 0.11 stops at its iteration limit on this 3-variable sparsemax and a
    tighter Clarabel solve does not help either; SCS, tried next, does, and polishing
    makes its point exact: no warning, the right answer."""
    x, z = cp.Variable(3), cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0])
    layer = CvxpyLayer(prob, [z], [x])
    (out,) = layer(torch.tensor([-5.32597278, 4.41390093, 4.28520179], dtype=torch.float64))
    np.testing.assert_allclose(out.numpy(), [0.0, 0.5643495700, 0.4356504300], atol=1e-9)
    assert layer.info.residual[0] < 1e-9


@pytest.mark.parametrize("solver", ["CLARABEL", "NATIVE"])
def test_interleaved_backwards_find_their_forwards_factorizations(solver, monkeypatch):
    """Two calls, then their two backwards: each finds its own forward's factors again
    by the fingerprint of its point (x, y and θ's row sums) and factors nothing."""
    from zoo import box_qp, box_qp_values

    layer = CvxpyLayer(*box_qp(), solver=solver)
    calls = _count_factorizations(monkeypatch)
    rng = np.random.default_rng(11)
    first = [torch.tensor(v, requires_grad=True) for v in box_qp_values(5, rng)]
    second = [torch.tensor(v, requires_grad=True) for v in box_qp_values(5, rng)]
    (x1,), (x2,) = layer(*first), layer(*second)
    forward = calls[0]
    assert forward >= 2  # each forward polished
    x1.sum().backward()
    x2.sum().backward()
    assert calls[0] == forward
    assert all(torch.isfinite(p.grad).all() for p in first + second)
