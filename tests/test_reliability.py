"""A layer is a plain value: it copies, pickles, serves several threads, and survives
elements without a solution.

Every call returns its own diagnostics and hands them to its own backward pass, so
``layer.info`` is always one call's complete record; the compiled program pickles
(without the CVXPY problem's caches), so ``torch.save(model)``, ``copy.deepcopy`` and
``pickle`` work in every framework and give identical results.
"""

from __future__ import annotations

import copy
import gc
import io
import pickle
import threading

import numpy as np
import pytest
import torch

from convexlayers import InaccurateSolutionWarning, SolverArgumentError, SolverError, SolverStatus
from convexlayers._core import SolutionMap, _kernel
from convexlayers.solvers import get_solver
from convexlayers.solvers._base import SolveResult
from convexlayers.torch import CvxpyLayer
from zoo import box_qp, box_qp_values


def _box_qp():
    return box_qp()


def _values(batch: int, rng, infeasible=()):
    return [torch.tensor(v, requires_grad=True) for v in box_qp_values(batch, rng, infeasible)]


def _forward_backward(layer, values):
    (x,) = layer(*values)
    grads = torch.autograd.grad((x * torch.arange(1.0, 4.0, dtype=x.dtype)).sum(), values)
    return x.detach(), [g.detach() for g in grads]


def test_pickle_deepcopy_and_torch_save_give_identical_results():
    layer = CvxpyLayer(*_box_qp())
    values = _values(4, np.random.default_rng(0))
    x0, g0 = _forward_backward(layer, values)
    buf = io.BytesIO()
    torch.save(torch.nn.Sequential(layer), buf)
    buf.seek(0)
    copies = [
        pickle.loads(pickle.dumps(layer)),
        copy.deepcopy(layer),
        torch.load(buf, weights_only=False)[0],
    ]
    for other in copies:
        assert other.info is None or other.info.status == layer.info.status
        x1, g1 = _forward_backward(other, values)
        assert torch.equal(x0, x1)
        for a, b in zip(g0, g1, strict=True):
            assert torch.equal(a, b)


def test_a_deep_copy_is_independent_of_the_original():
    layer = CvxpyLayer(*_box_qp())
    rng = np.random.default_rng(1)
    _forward_backward(layer, _values(2, rng))
    clone = copy.deepcopy(layer)
    _forward_backward(clone, _values(5, rng))
    assert len(clone.info.status) == 5 and len(layer.info.status) == 2
    del layer
    gc.collect()
    x, _ = _forward_backward(clone, _values(3, rng))  # the original is gone
    assert x.shape == (3, 3) and len(clone.info.status) == 3


def test_pickled_layer_still_compiles_for_another_solver():
    """The CVXPY problem travels without its caches: ECOS needs a second compilation."""
    layer = pickle.loads(pickle.dumps(CvxpyLayer(*_box_qp())))
    values = _values(2, np.random.default_rng(2))
    (x_ecos,) = layer(*values, solver_args={"solve_method": "ECOS"})
    (x_clarabel,) = layer(*values)
    torch.testing.assert_close(x_ecos, x_clarabel, atol=1e-5, rtol=1e-5)  # ECOS at 1e-8


def test_user_problem_pickles_after_the_layer_is_built():
    """CVXPY caches our canonicalization target on the problem; it must pickle too."""
    prob, params, variables = _box_qp()
    CvxpyLayer(prob, params, variables)
    restored = pickle.loads(pickle.dumps(prob))
    assert len(restored.parameters()) == 3


def test_info_belongs_to_one_call():
    """forward(B=3), forward(B=5), backward of the first: info is the first call's, whole."""
    layer = CvxpyLayer(*_box_qp())
    rng = np.random.default_rng(3)
    first, second = _values(3, rng), _values(5, rng)
    (x3,) = layer(*first)
    layer(*second)
    assert len(layer.info.status) == 5 and layer.info.derivative is None
    x3.sum().backward()
    info = layer.info
    assert len(info.status) == 3 and len(info.derivative.method) == 3
    assert info.residual.shape == info.derivative.kkt_residual.shape == (3,)


@pytest.mark.parametrize("solver", [None, "NATIVE"])
def test_one_layer_shared_by_threads(solver):
    """Results equal the serial ones, and every read of info is one call's record
    (NATIVE: the compiled kernel, which releases the GIL, on every thread at once)."""
    layer = CvxpyLayer(*_box_qp(), solver=solver)
    rng = np.random.default_rng(4)
    jobs = [_values(b, rng) for b in (1, 2, 3, 4, 5, 6, 7, 8)]
    serial = [_forward_backward(layer, v) for v in jobs]
    results, inconsistent = [None] * len(jobs), []

    def work(i):
        for _ in range(5):
            results[i] = _forward_backward(layer, jobs[i])
            info = layer.info
            sizes = {len(info.status), info.residual.size, info.iterations.size}
            if info.derivative is not None:
                sizes |= {len(info.derivative.method), info.derivative.residual.size}
            if len(sizes) != 1:
                inconsistent.append(sizes)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert inconsistent == []
    for (x0, g0), (x1, g1) in zip(serial, results, strict=True):
        torch.testing.assert_close(x0, x1, atol=1e-12, rtol=0)
        for a, b in zip(g0, g1, strict=True):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


@pytest.mark.parametrize("where", ["layer", "call"])
def test_on_failure_nan_keeps_the_rest_of_the_batch(where):
    prob, params, variables = _box_qp()
    layer = CvxpyLayer(prob, params, variables, on_failure="nan" if where == "layer" else "raise")
    call = {"on_failure": "nan"} if where == "call" else {}
    values = _values(4, np.random.default_rng(5), infeasible=[1, 3])
    (x,) = layer(*values, **call)
    assert torch.isnan(x[[1, 3]]).all() and torch.isfinite(x[[0, 2]]).all()
    assert layer.info.failed == (1, 3)
    assert layer.info.status[1] is SolverStatus.INFEASIBLE
    x[[0, 2]].sum().backward()
    assert layer.info.derivative.method[1] == "none"
    for v in values:
        assert torch.isfinite(v.grad).all() and (v.grad[[1, 3]] == 0).all()
    # The solved elements match a batch without the failures, outputs and gradients.
    good = [v.detach()[[0, 2]].requires_grad_() for v in values]
    (x_good,) = layer(*good)
    x_good.sum().backward()
    torch.testing.assert_close(x[[0, 2]], x_good, atol=1e-12, rtol=0)
    for v, g in zip(values, good, strict=True):
        torch.testing.assert_close(v.grad[[0, 2]], g.grad, atol=1e-10, rtol=0)


def test_raise_is_the_default_and_names_the_elements():
    layer = CvxpyLayer(*_box_qp())
    values = _values(4, np.random.default_rng(6), infeasible=[2])
    with pytest.raises(SolverError, match=r"batch elements \[2: infeasible\]") as err:
        layer(*values)
    assert err.value.indices == [2]
    assert np.isnan(err.value.outputs[0][2]).all() and np.isfinite(err.value.outputs[0][0]).all()
    with pytest.raises(SolverArgumentError, match="on_failure: expected 'raise'"):
        layer(*values, on_failure="skip")
    with pytest.raises(SolverArgumentError, match="on_failure"):
        CvxpyLayer(*_box_qp(), on_failure=None)


def test_iteration_limit_returns_the_last_iterate_flagged_inaccurate():
    layer = CvxpyLayer(*_box_qp(), refine=False)
    values = _values(2, np.random.default_rng(7))
    with pytest.warns(InaccurateSolutionWarning, match=r"batch elements \[0, 1\]"):
        (x,) = layer(*values, solver_args={"max_iters": 2})
    assert layer.info.status == (SolverStatus.MAX_ITERATIONS,) * 2
    assert torch.isfinite(x).all()
    (exact,) = layer(*values)
    assert (x - exact).abs().max() > 1e-6  # a true iterate, not the solution
    # refine=True polishes the iterate into the solution: no warning (warnings are errors).
    polished = CvxpyLayer(*_box_qp(), refine=True)
    (xp,) = polished(*values, solver_args={"max_iters": 2})
    torch.testing.assert_close(xp, exact, atol=1e-7, rtol=0)


@pytest.mark.parametrize("solver, order", [
    ("NATIVE", ["NATIVE", "CLARABEL", "SCS"]), ("ECOS", ["ECOS", "CLARABEL", "SCS"]),
    ("CLARABEL", ["CLARABEL", "SCS"]), ("SCS", ["SCS", "CLARABEL"])])
def test_inexact_elements_are_retried_tighter_then_by_clarabel_then_scs(solver, order):
    """An element polishing cannot make exact is solved again by its own backend at a
    tight tolerance, then by the others, the interior point first (a rank-deficient
    equality QP NATIVE could not make exact got SCS's 10,000-iteration status)."""
    smap = SolutionMap(*_box_qp())
    backend = get_solver(solver)
    retries = list(_kernel._retries(backend, {}, smap.program(solver)))
    assert [b.name for b, _ in retries] == order
    assert retries[0][1] == backend.settings({"eps": _kernel.TIGHT_EPS})


def test_points_their_solver_called_inaccurate_are_kept_only_at_rounding_level():
    """An element is solved again when its residual misses the target, or when its
    solver called it inaccurate and polishing left it above rounding level (a stalled
    NATIVE point on ill-posed data, polished to 6e-10, was 3.1 off relative)."""
    def result(status):
        return SolveResult(np.zeros(1), np.zeros(1), np.zeros(1), status, 10, 0.0, "")

    ok, rough = SolverStatus.OPTIMAL, SolverStatus.OPTIMAL_INACCURATE
    results = [result(ok), result(ok), result(rough), result(rough), result(rough)]
    residual = np.array([5e-10, 2e-9, 5e-10, 1e-13, np.nan])
    stuck = _kernel._stuck(results, residual, 1e-9)
    assert stuck.tolist() == [False, True, True, False, False]
