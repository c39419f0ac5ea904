"""Warm starts: the same answers to the tolerance, fewer iterations on slowly varying
problems, a cold start where the memory does not fit, and clear errors."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers import ParameterError, SolverArgumentError
from convexlayers._core import SolutionMap
from convexlayers.torch import CvxpyLayer


def mpc_problem(nx: int = 4, nu: int = 2, horizon: int = 10):
    """A box-constrained MPC: the state x0 is the parameter, the inputs the output."""
    rng = np.random.default_rng(0)
    A = np.eye(nx) + 0.1 * rng.standard_normal((nx, nx))
    B = rng.standard_normal((nx, nu))
    x0 = cp.Parameter(nx)
    X, U = cp.Variable((nx, horizon + 1)), cp.Variable((nu, horizon))
    cons = [X[:, 0] == x0, cp.abs(U) <= 1]
    cons += [X[:, t + 1] == A @ X[:, t] + B @ U[:, t] for t in range(horizon)]
    prob = cp.Problem(cp.Minimize(cp.sum_squares(X) + 0.1 * cp.sum_squares(U)), cons)
    return prob, x0, U


def drift(steps: int = 12, batch: int = 6) -> list[np.ndarray]:
    """Slowly varying parameter values: a random walk of small steps."""
    rng = np.random.default_rng(1)
    start = 3.0 * rng.standard_normal((batch, 4))
    return [start + 0.02 * k * np.sin(np.arange(4) + k) for k in range(steps)]


def run(smap: SolutionMap, warm: bool):
    smap._last = None
    outs, iters = [], []
    for value in drift():
        sol = smap.solve([value], warm_start=warm)
        outs.append(sol.outputs[0])
        iters.append(sol.info.iterations.sum())
    return outs, int(np.sum(iters))


@pytest.mark.parametrize("solver", ["SCS", "NATIVE"])
def test_warm_start_saves_iterations_same_answer(solver):
    prob, x0, U = mpc_problem()
    smap = SolutionMap(prob, [x0], [U], solver=solver)
    cold, cold_iters = run(smap, False)
    warm, warm_iters = run(smap, True)
    for a, b in zip(cold, warm, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8, rtol=0)
    assert warm_iters < 0.9 * cold_iters, (solver, cold_iters, warm_iters)


def test_warm_answer_matches_cvxpy():
    prob, x0, U = mpc_problem()
    smap = SolutionMap(prob, [x0], [U], solver="SCS")
    values = drift(steps=2, batch=1)
    smap.solve([values[0][0]])
    sol = smap.solve([values[1][0]], warm_start=True)
    x0.value = values[1][0]
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    np.testing.assert_allclose(sol.outputs[0], U.value, atol=1e-6)


def test_another_batch_size_starts_cold():
    prob, x0, U = mpc_problem()
    smap = SolutionMap(prob, [x0], [U], solver="NATIVE")
    values = drift(steps=1, batch=6)[0]
    smap.solve([values])
    cold = SolutionMap(prob, [x0], [U], solver="NATIVE").solve([values[:3]])
    warm = smap.solve([values[:3]], warm_start=True)  # memory is for 6 elements: unused
    np.testing.assert_array_equal(cold.info.iterations, warm.info.iterations)
    np.testing.assert_array_equal(cold.outputs[0], warm.outputs[0])


def test_backends_without_warm_start_ignore_it():
    prob, x0, U = mpc_problem()
    smap = SolutionMap(prob, [x0], [U])  # Clarabel
    values = drift(steps=2)
    smap.solve([values[0]])
    warm = smap.solve([values[1]], warm_start=True)
    cold = SolutionMap(prob, [x0], [U]).solve([values[1]])
    np.testing.assert_array_equal(cold.outputs[0], warm.outputs[0])


def test_explicit_points_and_their_shapes():
    prob, x0, U = mpc_problem()
    smap = SolutionMap(prob, [x0], [U], solver="SCS")
    values = drift(steps=2)
    first = smap.solve([values[0]])
    smap._last = None
    again = smap.solve([values[1]], warm_start=first.state[:3])
    cold = SolutionMap(prob, [x0], [U], solver="SCS").solve([values[1]])
    np.testing.assert_allclose(again.outputs[0], cold.outputs[0], atol=1e-8)
    assert again.info.iterations.sum() < cold.info.iterations.sum()
    with pytest.raises(ParameterError, match=r"warm_start: expected \(x, y, s\) of shapes"):
        smap.solve([values[1]], warm_start=[a[:2] for a in first.state[:3]])


def test_torch_layer_warm_start_and_gradients():
    prob, x0, U = mpc_problem()
    layer = CvxpyLayer(prob, [x0], [U], solver="SCS")
    values = [torch.tensor(v, requires_grad=True) for v in drift(steps=2)]
    layer(values[0])
    (u_warm,) = layer(values[1], warm_start=True)
    iters_warm = layer.info.iterations.sum()
    (g_warm,) = torch.autograd.grad(u_warm.sum(), values[1])
    cold = CvxpyLayer(prob, [x0], [U], solver="SCS")
    (u_cold,) = cold(values[1])
    (g_cold,) = torch.autograd.grad(u_cold.sum(), values[1])
    assert iters_warm < cold.info.iterations.sum()
    assert torch.allclose(u_warm, u_cold, atol=1e-8) and torch.allclose(g_warm, g_cold,
                                                                         atol=1e-7)


def test_warm_start_flag_in_jax_tensorflow_mlx():
    prob, x0, U = mpc_problem()
    values = drift(steps=2)
    reference = SolutionMap(prob, [x0], [U], solver="SCS").solve([values[1]]).outputs[0]
    results = {}
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    from convexlayers.jax import CvxpyLayer as JaxLayer

    layer = JaxLayer(prob, [x0], [U], solver="SCS")
    step = jax.jit(lambda v: layer(v, warm_start=True)[0])
    step(values[0])
    results["jax"] = (np.asarray(step(values[1])), layer.info)
    tf = pytest.importorskip("tensorflow")
    from convexlayers.tensorflow import CvxpyLayer as TfLayer

    layer = TfLayer(prob, [x0], [U], solver="SCS")
    layer(tf.constant(values[0]))
    results["tf"] = (layer(tf.constant(values[1]), warm_start=True)[0].numpy(), layer.info)
    mx = pytest.importorskip("mlx.core")
    from convexlayers.mlx import CvxpyLayer as MlxLayer

    layer = MlxLayer(prob, [x0], [U], solver="SCS")
    layer(mx.array(values[0], dtype=mx.float64))
    out = layer(mx.array(values[1], dtype=mx.float64), warm_start=True)[0]
    results["mlx"] = (np.array(out), layer.info)
    cold_iters = SolutionMap(prob, [x0], [U], solver="SCS").solve([values[1]]).info.iterations
    for name, (out, info) in results.items():
        np.testing.assert_allclose(out, reference, atol=1e-8, err_msg=name)
        assert info.iterations.sum() < cold_iters.sum(), name


@pytest.mark.parametrize("bad", ["yes", 1, None, np.ones(3)])
def test_bad_warm_start_flag(bad):
    prob, x0, U = mpc_problem()
    layer = CvxpyLayer(prob, [x0], [U], solver="SCS")
    with pytest.raises(SolverArgumentError, match="warm_start: expected True"):
        layer(torch.ones(4, dtype=torch.float64), warm_start=bad)
