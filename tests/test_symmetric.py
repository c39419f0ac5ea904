"""Symmetric, PSD and NSD parameters take asymmetric values and act as (X + Xᵀ)/2.

Finite-difference checkers (``jax.test_util.check_grads``,
``torch.autograd.gradcheck``) perturb one entry at a time, so a layer that rejected
|X − Xᵀ| > 1e-6 could not be checked without a symmetrizing wrapper. The semidefinite
checks apply to the symmetric part.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers import ParameterError
from convexlayers.torch import CvxpyLayer


def _problem():
    """0.5 xᵀQx + qᵀx s.t. sum(x) = 1, with Q PSD; outputs x and the equality's dual."""
    x, q = cp.Variable(3), cp.Parameter(3, name="q")
    Q = cp.Parameter((3, 3), PSD=True, name="Q")
    con = cp.sum(x) == 1
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, Q) + q @ x), [con])
    return prob, [Q, q], [x, con.dual_variables[0]]


def _values(seed=0):
    """X well inside the PSD cone plus an asymmetric perturbation E of size 1e-4."""
    rng = np.random.default_rng(seed)
    L = rng.standard_normal((3, 3))
    X = L @ L.T + np.eye(3)
    E = 1e-4 * np.triu(rng.standard_normal((3, 3)), 1)
    return X + E, rng.standard_normal(3)


def test_asymmetric_value_acts_as_its_symmetric_part():
    Q, q = _values()
    assert np.abs(Q - Q.T).max() > 1e-5
    layer = CvxpyLayer(*_problem(), refine=True)
    with torch.no_grad():
        outs = layer(torch.tensor(Q), torch.tensor(q))
        sym = layer(torch.tensor(0.5 * (Q + Q.T)), torch.tensor(q))
    for a, b in zip(outs, sym, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)
    prob, params, variables = _problem()
    params[0].value, params[1].value = 0.5 * (Q + Q.T), q
    prob.solve(solver=cp.CLARABEL)
    for out, var in zip(outs, variables, strict=True):
        np.testing.assert_allclose(out.numpy(), var.value, atol=1e-7)


def test_gradient_is_symmetric_and_gradcheck_passes_unwrapped():
    Q, q = (torch.tensor(v, requires_grad=True) for v in _values(1))
    layer = CvxpyLayer(*_problem(), refine=True)
    x, nu = layer(Q, q)
    (gQ,) = torch.autograd.grad((x * torch.arange(3.0, dtype=x.dtype)).sum() + nu, [Q])
    np.testing.assert_allclose(gQ.numpy(), gQ.numpy().T, atol=1e-14)
    assert torch.autograd.gradcheck(lambda Q, q: layer(Q, q), (Q, q), eps=1e-6, atol=1e-6)


def test_jax_check_grads_on_an_asymmetric_value():
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    from convexlayers.jax import CvxpyLayer as JaxLayer

    x64 = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    try:
        layer = JaxLayer(*_problem(), refine=True)
        values = [jax.numpy.asarray(v) for v in _values(2)]
        check_grads(layer, values, order=1, modes=["rev"])
    finally:
        jax.config.update("jax_enable_x64", x64)


def test_semidefinite_checks_apply_to_the_symmetric_part():
    layer = CvxpyLayer(*_problem())
    q = torch.zeros(3, dtype=torch.float64)
    # [[1, 3], [-3, 1]]-like: far from symmetric, but its symmetric part is I.
    skew = torch.tensor([[0.0, 3.0, 0.0], [-3.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
    layer(torch.eye(3, dtype=torch.float64) + skew.double(), q)
    # A symmetric part with eigenvalue -1: rejected, whatever the skew part.
    bad = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)) + skew.double()
    with pytest.raises(ParameterError, match=r"'Q': declared positive semidefinite.*-1"):
        layer(bad, q)
    # Tolerance relative to scale: -1e-9 on a matrix of size 1e3 passes.
    tiny = torch.diag(torch.tensor([1e3, 1e3, -1e-9], dtype=torch.float64))
    layer(tiny, q)


def test_nsd_and_symmetric_parameters():
    x = cp.Variable(2)
    N = cp.Parameter((2, 2), NSD=True, name="N")
    S = cp.Parameter((2, 2), symmetric=True, name="S")
    X = cp.Variable((2, 2), PSD=True)
    prob = cp.Problem(cp.Minimize(-cp.quad_form(x, N) + cp.sum(x) + cp.trace(S @ X)),
                      [cp.trace(X) == 1])
    layer = CvxpyLayer(prob, [N, S], [x, X])
    N_v = torch.tensor([[-2.0, 0.7], [-0.3, -1.0]], dtype=torch.float64)
    S_v = torch.tensor([[1.0, 2.0], [0.0, 3.0]], dtype=torch.float64)
    with torch.no_grad():
        outs = layer(N_v, S_v)
        sym = layer(0.5 * (N_v + N_v.T), 0.5 * (S_v + S_v.T))
    for a, b in zip(outs, sym, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-10)
    with pytest.raises(ParameterError, match=r"'N': declared negative semidefinite"):
        layer(torch.eye(2, dtype=torch.float64), S_v)
