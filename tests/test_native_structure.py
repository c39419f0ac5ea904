"""The native backend's structure: block elimination, presolve, stalls, automatic choice.

The elimination is checked against dense solves on random quasi-definite batches of
many sparsity patterns; the presolve against Clarabel on random QPs with CVXPY's
defined variables; the automatic choice by which backend ran and by agreement with
Clarabel, outputs and gradients.
"""

from __future__ import annotations

import pickle

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers._core import SolutionMap
from convexlayers.solvers import _ipm_compiled as compiled
from convexlayers.solvers._cone_ops import Cones
from convexlayers.solvers._elimination import Factorization, analyse, invert
from convexlayers.solvers._ipm import solve_qp_batch
from convexlayers.solvers._native import _solve, dense_profile, prefers_native
from convexlayers.solvers._presolve import defined, presolve
from convexlayers.solvers._reduced import BatchQP, layout_for
from convexlayers.torch import CvxpyLayer


def _quasi_definite(rng, B, n, z, density):
    """A batch of [[H, Aᵀ], [A, -δI]] with H positive definite on a random pattern."""
    G = rng.standard_normal((B, 2 * n, n)) * (rng.random((2 * n, n)) < density)
    H = np.swapaxes(G, 1, 2) @ G + 0.1 * np.eye(n)
    A = rng.standard_normal((B, z, n)) * (rng.random((z, n)) < max(density, 2 / n))
    K = np.zeros((B, n + z, n + z))
    K[:, :n, :n], K[:, :n, n:], K[:, n:, :n] = H, np.swapaxes(A, 1, 2), A
    K[:, n:, n:] = -1e-3 * np.eye(z)
    return K


@pytest.mark.parametrize(("n", "z", "density"), [(40, 10, 0.05), (60, 0, 0.02),
                                                   (30, 20, 1.0), (80, 30, 0.01)])
def test_elimination_solves_like_a_dense_solve(n, z, density):
    rng = np.random.default_rng(n + z)
    K = _quasi_definite(rng, 6, n, z, density)
    pattern = (K != 0).any(axis=0)
    safe = np.r_[np.ones(n, bool), np.zeros(z, bool)]
    plan = analyse(pattern, safe)
    signs = np.r_[np.ones(n), -np.ones(z)]
    fac = Factorization(plan, K.copy(), signs, np.full(6, 1e-14))
    rhs = rng.standard_normal((6, n + z))
    x = fac.solve(rhs)
    ref = np.linalg.solve(K, rhs[..., None])[..., 0]
    np.testing.assert_allclose(x, ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    assert sorted(plan.order) == list(range(n + z))


@pytest.mark.parametrize("k", [7, 20])
def test_definite_blocks_are_inverted_and_the_others_survive(k):
    """Cholesky factor-form inverses of definite blocks (either sign) above _LU_BELOW,
    batched LU at or below it; an element that is not definite is inverted by LU (and the
    batch's inverses formed), a non-finite one gets the identity, a mixed-sign block goes
    to LU whole. The factor form applies and multiplies as the formed inverse does."""
    rng = np.random.default_rng(3)
    G = rng.standard_normal((4, k, k))
    M = G @ np.swapaxes(G, 1, 2) + 0.5 * np.eye(k)
    M[1] = G[1] + G[1].T  # symmetric, indefinite
    M[2, 0, 0] = np.nan
    for signs in (np.ones(k), -np.ones(k), np.r_[np.ones(4), -np.ones(k - 4)]):
        sign = signs[0] if (signs == signs[0]).all() else 1.0
        inv = invert(sign * M, signs).dense()
        for b in (0, 1, 3):
            np.testing.assert_allclose(inv[b] @ (sign * M[b]), np.eye(k), atol=1e-8)
        np.testing.assert_array_equal(inv[2], np.eye(k))
    v, C = rng.standard_normal((2, k)), rng.standard_normal((2, 3, k))
    for sign in (1.0, -1.0):
        good = sign * M[[0, 3]]
        fac = invert(good, np.full(k, sign))
        assert (fac.tri is not None) == (k > 7)  # all definite: kept in factor form
        np.testing.assert_allclose(fac.apply(v), np.linalg.solve(good, v[..., None])[..., 0],
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(fac.right(C), C @ np.linalg.inv(good), rtol=1e-9,
                                   atol=1e-9)


def test_elimination_removes_auxiliary_structure():
    """A chain of diagonal pivots (an ℓ1 LP's t, a sum of squares' rows) leaves a small
    dense rest: the factorization does not pay for CVXPY's auxiliary variables."""
    rng = np.random.default_rng(1)
    m, n = 30, 8
    A = rng.standard_normal((3, m, n))
    eye = np.broadcast_to(np.eye(m), (3, m, m))
    # min 1ᵀt  s.t.  -t <= A x - b <= t   (variables x, t)
    Al = np.concatenate([np.concatenate([A, -eye], axis=2), np.concatenate([-A, -eye], axis=2)],
                        axis=1)
    qp = BatchQP(None, np.r_[np.zeros(n), np.ones(m)][None].repeat(3, 0),
                 np.zeros((3, 0, n + m)), np.zeros((3, 0)), Al, np.zeros((3, 2 * m)), Cones(2 * m))
    plan = layout_for(qp).plan
    assert plan.rest <= m and len(plan.order) - plan.rest == n


def _defined_qp(rng, B, n, p, m):
    """min ½‖t‖² + ½ε‖x‖² + qᵀx  s.t.  t = L x,  A x = b,  G x ≤ h, in CVXPY's form."""
    L = rng.standard_normal((B, p, n))
    G, A = rng.standard_normal((B, m, n)), rng.standard_normal((B, 2, n))
    x0 = rng.standard_normal((B, n))
    N = n + p
    P = np.zeros((B, N, N))
    P[:, n:, n:] = np.eye(p)
    P[:, :n, :n] = 0.1 * np.eye(n)
    q = np.concatenate([rng.standard_normal((B, n)), np.zeros((B, p))], axis=1)
    Az = np.zeros((B, p + 2, N))
    Az[:, :p, :n], Az[:, :p, n:] = -L, np.eye(p)
    Az[:, p:, :n] = A
    bz = np.concatenate([np.zeros((B, p)), (A @ x0[..., None])[..., 0]], axis=1)
    Al = np.concatenate([G, np.zeros((B, m, p))], axis=2)
    bl = (G @ x0[..., None])[..., 0] + rng.random((B, m))
    return BatchQP(P, q, Az, bz, Al, bl, Cones(m))


def test_presolve_substitutes_defined_variables_and_recovers_them():
    rng = np.random.default_rng(2)
    qp = _defined_qp(rng, 5, 12, 9, 10)
    t, rows = defined(qp)
    assert list(t) == list(range(12, 21)) and list(rows) == list(range(9))
    pre = presolve(qp)
    assert pre.qp.q.shape[1] == 12 and pre.qp.Az.shape[1] == 2
    # The reduced data C-ordered: a fancy index would lay the batch axis innermost and
    # slow every product of the IPM (it measured 10-35% of the IPM's time).
    for part in (pre.qp.P, pre.qp.Az, pre.qp.Al):
        assert part.flags.c_contiguous
    res = _solve(qp, {"tol": 1e-10, "max_iter": 50}, None)
    plain = solve_qp_batch(qp, tol=1e-10)
    np.testing.assert_allclose(res.x, plain.x, atol=1e-7)
    np.testing.assert_allclose(res.yz, plain.yz, atol=1e-7)
    np.testing.assert_allclose(res.yl, plain.yl, atol=1e-7)


def test_presolve_leaves_programs_without_defined_variables():
    rng = np.random.default_rng(3)
    qp = _defined_qp(rng, 2, 5, 4, 3)
    qp.Al[:, 0, 7] = 1.0  # t₂ now appears in an inequality: not defined
    t, _ = defined(qp)
    assert 7 not in t and len(t) == 3


def test_a_degenerate_element_is_polished_not_lost():
    """min ½‖x‖² s.t. x ≥ 0 has y = s = 0 at the solution: no strict complementarity,
    the IPM's progress stalls near the end; the layer still returns the exact answer."""
    x = cp.Variable(4)
    c = cp.Parameter(4)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + c @ x), [x >= 0])
    vals = np.zeros((6, 4))
    vals[:, :2] = np.random.default_rng(4).standard_normal((6, 2))
    layer = CvxpyLayer(prob, parameters=[c], variables=[x], solver="NATIVE")
    (out,) = layer(torch.tensor(vals))
    np.testing.assert_allclose(out.numpy(), np.maximum(-vals, 0.0), atol=1e-9)


def _dense_qp(n=6, m=5):
    x = cp.Variable(n)
    L, q = cp.Parameter((n, n)), cp.Parameter(n)
    G, h = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(L @ x) + q @ x), [G @ x <= h])
    return prob, [L, q, G, h], [x]


def _dense_values(rng, B, n=6, m=5):
    return [rng.standard_normal((B, n, n)) + 2 * np.eye(n), rng.standard_normal((B, n)),
            rng.standard_normal((B, m, n)), rng.random((B, m)) + 0.5]


def test_automatic_choice_runs_native_on_dense_batches_and_agrees_with_clarabel():
    prob, params, variables = _dense_qp()
    auto = CvxpyLayer(prob, parameters=params, variables=variables)
    fixed = CvxpyLayer(prob, parameters=params, variables=variables, solver="CLARABEL")
    vals = _dense_values(np.random.default_rng(5), 40)
    grads = []
    for layer in (auto, fixed):
        ps = [torch.tensor(v, requires_grad=True) for v in vals]
        (out,) = layer(*ps)
        (out * torch.linspace(-1, 1, 6, dtype=torch.float64)).sum().backward()
        grads.append((out.detach(), [p.grad for p in ps]))
    assert auto.info.solver == "NATIVE" and fixed.info.solver == "CLARABEL"
    torch.testing.assert_close(grads[0][0], grads[1][0], atol=1e-9, rtol=0)
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


def test_automatic_choice_keeps_clarabel_for_small_calls_settings_and_sparse_programs(
        monkeypatch):
    prob, params, variables = _dense_qp()
    layer = CvxpyLayer(prob, parameters=params, variables=variables)
    small = [torch.tensor(v) for v in _dense_values(np.random.default_rng(6), 2)]
    monkeypatch.setenv("CONVEXLAYERS_COMPILED", "0")
    layer(*small)
    assert layer.info.solver == "CLARABEL"  # too little work for the array method
    monkeypatch.setenv("CONVEXLAYERS_COMPILED", "1")
    layer(*small)  # the compiled method takes small calls too (where Numba is)
    assert layer.info.solver == ("NATIVE" if compiled.available() else "CLARABEL")
    big = [torch.tensor(v) for v in _dense_values(np.random.default_rng(6), 40)]
    layer(*big, solver_args={"max_iter": 200})
    assert layer.info.solver == "CLARABEL"  # settings name a backend's keys
    copy = pickle.loads(pickle.dumps(layer))
    copy(*big)
    assert copy.info.solver == "NATIVE"
    # sparsemax: a diagonal system, which Clarabel's sparse factorization wins
    x, z = cp.Variable(50), cp.Parameter(50)
    sparse = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0])
    smap = SolutionMap(sparse, [z], [x])
    profile = dense_profile(smap.program("CLARABEL").data)
    assert profile[1] < 0.1 and not prefers_native(profile, 10_000)


def test_automatic_choice_takes_half_dense_programs_only_to_the_compiled_kernel(
        monkeypatch):
    """The README's l1 LP (reduced system 56% dense): NATIVE where the compiled kernel
    takes it, Clarabel otherwise; answers and gradients agree either way."""
    m, n = 12, 6
    x, A, b = cp.Variable(n), cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b, 1)), [x >= 0])
    smap = SolutionMap(prob, [A, b], [x])
    size, density = dense_profile(smap.program("CLARABEL").data)
    assert 0.5 <= density < 0.6
    assert prefers_native((size, density), 4) == compiled.available()
    monkeypatch.setenv("CONVEXLAYERS_COMPILED", "0")
    assert not prefers_native((size, density), 10_000)
    monkeypatch.setenv("CONVEXLAYERS_COMPILED", "1")
    rng = np.random.default_rng(3)
    vals = [rng.standard_normal((4, m, n)), rng.standard_normal((4, m))]
    results = []
    for solver in (None, "CLARABEL"):
        layer = CvxpyLayer(prob, parameters=[A, b], variables=[x], solver=solver)
        ps = [torch.tensor(v, requires_grad=True) for v in vals]
        (out,) = layer(*ps)
        (out * torch.linspace(-1, 1, n, dtype=torch.float64)).sum().backward()
        results.append((layer.info.solver, out.detach(), [p.grad for p in ps]))
    assert results[0][0] == ("NATIVE" if compiled.available() else "CLARABEL")
    torch.testing.assert_close(results[0][1], results[1][1], atol=1e-8, rtol=0)
    for a, g in zip(results[0][2], results[1][2], strict=True):
        torch.testing.assert_close(a, g, atol=1e-6, rtol=0)


def test_dense_profile_refuses_cones_native_does_not_take():
    x, a = cp.Variable(3), cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.norm(x - a, 2)), [x >= 0])
    smap = SolutionMap(prob, [a], [x])
    assert dense_profile(smap.program("CLARABEL").data) is None
    assert not prefers_native(None, 10_000)


def test_automatic_choice_in_jax_under_jit_and_grad():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    from convexlayers.jax import CvxpyLayer as JaxLayer

    prob, params, variables = _dense_qp()
    vals = [jax.numpy.asarray(v) for v in _dense_values(np.random.default_rng(7), 40)]
    grads = {}
    for solver in (None, "CLARABEL"):
        layer = JaxLayer(prob, parameters=params, variables=variables, solver=solver)

        def loss(*ps, layer=layer):
            return (layer(*ps)[0] ** 2).sum()

        grads[solver] = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(*vals)
        assert layer.info.solver == ("NATIVE" if solver is None else "CLARABEL")
    for a, b in zip(grads[None], grads["CLARABEL"], strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)


def test_a_map_pickled_before_the_automatic_choice_keeps_its_backend():
    """Maps pickled by the previous version have no automatic-choice attributes."""
    prob, params, variables = _dense_qp()
    smap = SolutionMap(prob, params, variables)
    state = smap.__getstate__()
    del state["_auto"], state["_profile"]
    old = SolutionMap.__new__(SolutionMap)
    old.__dict__.update(state)
    assert old.solve(_dense_values(np.random.default_rng(8), 40)).info.solver == "CLARABEL"
    assert smap.solve(_dense_values(np.random.default_rng(8), 40)).info.solver == "NATIVE"


def test_a_program_whose_variables_are_all_defined():
    """x == a with ½‖x‖²: presolve leaves no unknowns; both paths return x = a."""
    x, a = cp.Variable(3), cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x)), [x == a])
    values = torch.tensor(np.random.default_rng(9).standard_normal((200, 3)),
                          requires_grad=True)
    for solver in ("NATIVE", None):
        layer = CvxpyLayer(prob, parameters=[a], variables=[x], solver=solver)
        (out,) = layer(values)
        (grad,) = torch.autograd.grad(out.sum(), values)
        torch.testing.assert_close(out, values, atol=1e-12, rtol=0)
        torch.testing.assert_close(grad, torch.ones_like(grad), atol=1e-10, rtol=0)


@pytest.mark.parametrize("framework", ["tensorflow", "mlx"])
def test_automatic_choice_in_tensorflow_and_mlx(framework):
    """The choice and its label travel through the other adapters, gradients included."""
    prob, params, variables = _dense_qp()
    vals = _dense_values(np.random.default_rng(10), 40)
    ref = CvxpyLayer(prob, parameters=params, variables=variables, solver="CLARABEL")
    ps = [torch.tensor(v, requires_grad=True) for v in vals]
    (out,) = ref(*ps)
    ref_grad = torch.autograd.grad((out**2).sum(), ps[1])[0].numpy()
    if framework == "tensorflow":
        tf = pytest.importorskip("tensorflow")
        from convexlayers.tensorflow import CvxpyLayer as Layer

        layer = Layer(prob, parameters=params, variables=variables)
        q = tf.Variable(vals[1])
        with tf.GradientTape() as tape:
            (sol,) = layer(tf.constant(vals[0]), q, tf.constant(vals[2]), tf.constant(vals[3]))
            loss = tf.reduce_sum(sol**2)
        grad = tape.gradient(loss, q).numpy()
    else:
        mx = pytest.importorskip("mlx.core")
        from convexlayers.mlx import CvxpyLayer as Layer

        layer = Layer(prob, parameters=params, variables=variables)
        arrays = [mx.array(v.astype(np.float32)) for v in vals]

        def loss(q):
            return (layer(arrays[0], q, arrays[2], arrays[3])[0] ** 2).sum()

        grad = np.array(mx.grad(loss)(arrays[1]))
    assert layer.info.solver == "NATIVE"
    tol = 1e-7 if framework == "tensorflow" else 1e-3  # MLX computes in float32
    np.testing.assert_allclose(grad, ref_grad, atol=tol * (1 + np.abs(ref_grad).max()))
