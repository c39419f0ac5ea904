"""The native backend: a batched interior-point method over the whole batch at once.

It takes LPs, QPs, SOCPs and SDPs (zero, nonnegative, second-order and PSD cones; more
SDPs in test_native_psd.py); it is checked against Clarabel on every zoo problem of that
kind, batched, with infeasible and unbounded
elements mixed into a batch (handed to Clarabel, which certifies them), and its gradients
against finite differences.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convexlayers import SolverError, SolverStatus
from convexlayers._core import SolutionMap
from convexlayers.solvers import get_solver
from convexlayers.solvers._ipm import solve_qp_batch
from convexlayers.solvers._native import NativeSolver, batch_qp
from convexlayers.torch import CvxpyLayer
from fd import central_difference, directional, directions, weights
from zoo import CASES, box_qp, box_qp_values, interval, unbounded

QP_CASES = ["readme", "least_squares", "lp", "qp_param_P"]


def _batch(case, rng, size=5):
    draws = [case.draw(rng) for _ in range(size)]
    return [np.stack(vs) for vs in zip(*draws, strict=True)]


@pytest.mark.parametrize("name", QP_CASES)
def test_ipm_alone_reaches_its_tolerance_and_matches_clarabel(name):
    """The raw IPM (no polishing) converges on every element and agrees with Clarabel."""
    case = CASES[name]()
    smap = SolutionMap(case.problem, case.parameters, case.variables, refine=False)
    values = _batch(case, np.random.default_rng(0))
    theta, _ = smap._theta(values)
    prog = smap.program("CLARABEL")
    data = prog.data.apply(theta)
    res = solve_qp_batch(batch_qp(prog.data, data), tol=1e-10)
    assert (res.error <= 1e-10).all() and (res.iterations < 30).all()
    ref = smap.solve(values).state[0]
    np.testing.assert_allclose(res.x, ref, atol=1e-6)


@pytest.mark.parametrize("name", [*QP_CASES, "socp", "sdp"])
def test_native_layer_forward_and_gradient(name):
    case = CASES[name]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver="NATIVE")
    clarabel = CvxpyLayer(case.problem, case.parameters, case.variables)
    values = _batch(case, np.random.default_rng(1))

    def f(layer):
        def run(vals):
            with torch.no_grad():
                return [o.numpy() for o in layer(*[torch.tensor(v) for v in vals])]
        return run

    for a, b in zip(f(layer)(values), f(clarabel)(values), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert layer.info.solver == "NATIVE" and layer.info.ok
    rng = np.random.default_rng(2)
    w = weights(f(layer)(values), rng)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    loss = sum((torch.tensor(wk) * o).sum() for wk, o in zip(w, layer(*tensors), strict=True))
    grads = [g.numpy() for g in torch.autograd.grad(loss, tensors)]
    d = directions(case.parameters, values, rng)
    fd = central_difference(f(layer), values, d, w, h=1e-6)
    assert abs(directional(grads, d) - fd) <= 1e-6 * (1 + abs(fd))


def test_failed_elements_are_certified_by_the_fallback():
    layer = CvxpyLayer(*box_qp(), solver="NATIVE", on_failure="nan")
    values = box_qp_values(6, np.random.default_rng(3), infeasible=[1, 4])
    (x,) = layer(*[torch.tensor(v) for v in values])
    assert layer.info.failed == (1, 4)
    assert layer.info.status[1] is SolverStatus.INFEASIBLE
    assert torch.isfinite(x[[0, 2, 3, 5]]).all()
    with pytest.raises(SolverError, match=r"NATIVE found no solution for batch elements \[0: "):
        CvxpyLayer(*interval(), solver="NATIVE")(torch.tensor([2.0, 0.0]), torch.tensor(1.0))
    with pytest.raises(SolverError, match="unbounded"):
        CvxpyLayer(*unbounded(), solver="NATIVE")(torch.tensor(-1.0))


def test_native_refuses_other_cones_and_takes_settings():
    case = CASES["exp_cone"]()
    with pytest.raises(ValueError, match=r"solver=.NATIVE. cannot solve this problem"):
        CvxpyLayer(case.problem, case.parameters, case.variables, solver="NATIVE")
    native = get_solver("native")
    assert native.settings({"eps": 1e-7, "max_iters": 20}) == {"tol": 1e-7, "max_iter": 20}
    assert get_solver(native) is native  # a backend object is accepted as solver=
    assert isinstance(native, NativeSolver) and native.batched


def test_large_problems_go_to_clarabel(monkeypatch):
    """Above MAX_DENSE unknowns the dense factorization would lose by orders of
    magnitude: the batch is solved by Clarabel, element by element."""
    import convexlayers.solvers._native as native

    monkeypatch.setattr(native, "MAX_DENSE", 0)
    case = CASES["lp"]()
    smap = SolutionMap(case.problem, case.parameters, case.variables)
    values = _batch(case, np.random.default_rng(4), size=2)
    theta, _ = smap._theta(values)
    prog = smap.program("CLARABEL")
    results = NativeSolver().solve_batch(prog.data, prog.data.apply(theta), {})
    assert all("Clarabel fallback" in r.message for r in results)
    assert all(r.status is SolverStatus.OPTIMAL for r in results)
