"""J factored through the Schur complement of CVXPY's defined variables.

The pairs (defined variable, its equality row) are found on compiled programs, the
factorization solves J_δ z = r and its transpose like a dense LU of the whole J_δ, an
element whose pivot is singular is factored whole, and the gradients of a layer whose
program has defined variables agree with finite differences.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers.cones import dual_projection_jacobian
from convexlayers.derivative import (
    AutoLinearSolver,
    DenseLU,
    KKTMatrix,
    SolutionDerivative,
    SparseLU,
)
from convexlayers.derivative._factors import DenseFactors, SchurFactors
from convexlayers.derivative._kkt import kkt_pattern, kkt_values
from convexlayers.torch import CvxpyLayer


def _least_squares_qp(n=6, k=8, m=4, coef=False):
    """min ½‖L x‖² + ½‖x‖² + qᵀx s.t. G x ≤ h, 1ᵀx = 1 (``coef``: a·t = L x, a a parameter)."""
    x = cp.Variable(n)
    L, q = cp.Parameter((k, n)), cp.Parameter(n)
    G, h = cp.Parameter((m, n)), cp.Parameter(m)
    params = [L, q, G, h]
    if coef:
        a, t = cp.Parameter(k), cp.Variable(k)
        params.append(a)
        obj = 0.5 * cp.sum_squares(t) + 0.5 * cp.sum_squares(x) + q @ x
        cons = [G @ x <= h, cp.sum(x) == 1, cp.multiply(a, t) == L @ x]
    else:
        obj = 0.5 * cp.sum_squares(L @ x) + 0.5 * cp.sum_squares(x) + q @ x
        cons = [G @ x <= h, cp.sum(x) == 1]
    return cp.Problem(cp.Minimize(obj), cons), params, x


def _values(rng, batch, n=6, k=8, m=4, coef=False):
    vals = [rng.standard_normal((batch, k, n)), rng.standard_normal((batch, n)),
            rng.standard_normal((batch, m, n)), rng.uniform(0.5, 1.5, (batch, m))]
    if coef:
        vals.append(rng.uniform(0.5, 2.0, (batch, k)))
    return vals


def _solved(layer, vals):
    """(structure, data, x, y, s) of the layer's compiled program solved at ``vals``."""
    layer(*[torch.tensor(v) for v in vals])
    smap = layer._map
    prog = smap.program(smap.solver)
    theta, _ = smap._theta(vals)
    _, x, y, s = smap._last
    return prog.data, prog.data.apply(theta), x, y, s


def _kkt(layer, vals):
    """J of the layer's compiled program at its solutions of ``vals``."""
    st, data, _, y, s = _solved(layer, vals)
    D = dual_projection_jacobian(st.dims, y - s)
    pattern = kkt_pattern(st, D)
    p_vals, _, a_vals, _ = st.split(data)
    return KKTMatrix(pattern, kkt_values(pattern, p_vals, a_vals, D), True)


def test_the_defined_variables_are_paired_with_their_rows():
    prob, params, x = _least_squares_qp()
    layer = CvxpyLayer(prob, parameters=params, variables=[x], solver="CLARABEL")
    J = _kkt(layer, _values(np.random.default_rng(0), 3))
    plan = J.pattern.pairs
    assert plan is not None and plan.j.size == 8  # t = L x, one per row of L
    assert plan.size == J.size - 16
    assert J.pattern.factored[0] == plan.size


@pytest.mark.parametrize("transpose", [False, True])
def test_schur_factors_solve_like_a_dense_lu(transpose):
    rng = np.random.default_rng(1)
    prob, params, x = _least_squares_qp()
    layer = CvxpyLayer(prob, parameters=params, variables=[x], solver="CLARABEL")
    J = _kkt(layer, _values(rng, 5))
    rhs = rng.standard_normal((5, J.size, 2))
    idx = np.array([4, 0, 2])
    schur = SchurFactors(J, J.pattern.pairs).apply(rhs[idx], transpose, idx)
    whole = DenseFactors(J).apply(rhs[idx], transpose, idx)
    np.testing.assert_allclose(schur, whole, rtol=1e-7, atol=1e-9 * np.abs(whole).max())
    residual = rhs[idx] - J.take(idx).matvec(schur, transpose)
    assert np.abs(residual).max() < 1e-6 * np.abs(rhs).max()


def test_an_element_with_a_singular_pivot_is_factored_whole():
    """a = 0 in one element: its t no longer sits in a nonsingular 2×2 block."""
    rng = np.random.default_rng(2)
    prob, params, x = _least_squares_qp(coef=True)
    layer = CvxpyLayer(prob, parameters=params, variables=[x], solver="CLARABEL")
    vals = _values(rng, 3, coef=True)
    vals[4][1, 2] = 0.0
    J = _kkt(layer, vals)
    assert J.pattern.pairs is not None
    factors = DenseLU().factor(J)
    owners = [type(f).__name__ for f in factors.owner]
    assert owners == ["SchurFactors", "DenseFactors", "SchurFactors"]
    rhs = rng.standard_normal((3, J.size, 1))
    z = factors.apply(rhs, False, np.arange(3))
    np.testing.assert_allclose(z, DenseFactors(J).apply(rhs, False, np.arange(3)),
                               rtol=1e-7, atol=1e-9 * np.abs(z).max())


def test_the_derivative_through_the_pairs_is_the_sparse_lu_one():
    rng = np.random.default_rng(3)
    prob, params, x = _least_squares_qp()
    layer = CvxpyLayer(prob, parameters=params, variables=[x], solver="CLARABEL")
    point = _solved(layer, _values(rng, 3))
    g = [rng.standard_normal(a.shape) for a in point[2:]]
    dense, sparse = (SolutionDerivative(*point, linear_solver=ls) for ls in (DenseLU(),
                                                                             SparseLU()))
    ours, ref = dense.vjp(*g), sparse.vjp(*g)
    assert all(isinstance(f, SchurFactors) for f in dense.store.owner)
    assert dense.report.method == ("lu",) * 3 and sparse.report.method == ("sparse_lu",) * 3
    np.testing.assert_allclose(ours, ref, rtol=1e-8, atol=1e-10 * np.abs(ref).max())


@pytest.mark.parametrize("solver", ["CLARABEL", "NATIVE", None])
def test_gradients_through_the_pairs_match_finite_differences(solver):
    rng = np.random.default_rng(4)
    prob, params, x = _least_squares_qp(coef=True)
    layer = CvxpyLayer(prob, parameters=params, variables=[x], solver=solver)
    vals = _values(rng, 4, coef=True)
    leaves = [torch.tensor(v, requires_grad=True) for v in vals]
    w = torch.tensor(rng.standard_normal((4, 6)))
    (layer(*leaves)[0] * w).sum().backward()
    assert set(layer.info.derivative.method) == {"lu"}
    step = np.sqrt(np.finfo(float).eps)
    for which in (0, 4):  # L and the coefficients a
        d = rng.standard_normal(vals[which].shape)
        plus, minus = list(vals), list(vals)
        plus[which], minus[which] = vals[which] + step * d, vals[which] - step * d
        with torch.no_grad():
            fp = (layer(*[torch.tensor(v) for v in plus])[0] * w).sum()
            fm = (layer(*[torch.tensor(v) for v in minus])[0] * w).sum()
        fd = float(fp - fm) / (2 * step)
        ad = float((leaves[which].grad * torch.tensor(d)).sum())
        assert abs(fd - ad) <= 1e-6 * max(1.0, abs(fd))


def test_the_schur_complement_is_counted_not_assumed_dense():
    """sparsemax: t = x − z pairs each t with one x, so S stays sparse (its update is
    diagonal) and the automatic strategy factors it as sparse."""
    n = 150
    x, z = cp.Variable(n), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0])
    layer = CvxpyLayer(prob, parameters=[z], variables=[x], solver="CLARABEL")
    J = _kkt(layer, [np.random.default_rng(5).standard_normal((2, n))])
    size, nnz = J.pattern.factored
    assert J.pattern.pairs is not None and size < J.size
    assert nnz < 6 * size  # x block diagonal, one dense row and column, D's diagonal
    assert not AutoLinearSolver().wants_dense(size, nnz)
    layer(torch.tensor(np.random.default_rng(6).standard_normal((2, n)), requires_grad=True)
          )[0].sum().backward()
    assert layer.info.derivative.method == ("sparse_lu",) * 2


def test_taking_elements_of_j_keeps_its_values_and_layout():
    """J.take: the matrix itself for the whole batch in order (no copy of its values);
    a subset with the same values, still laid out (nnz, B) for the products."""
    prob, params, x = _least_squares_qp()
    layer = CvxpyLayer(prob, parameters=params, variables=[x], solver="CLARABEL")
    J = _kkt(layer, _values(np.random.default_rng(5), 4))
    assert J.take(np.arange(4)) is J
    sub = J.take(np.array([3, 1]))
    np.testing.assert_array_equal(sub.values, J.values[[3, 1]])
    assert sub.values.T.flags.c_contiguous
    z = np.random.default_rng(6).standard_normal((2, J.size, 1))
    np.testing.assert_allclose(sub.matvec(z, False), J.matvec(
        np.concatenate([np.zeros((1, J.size, 1)), z[1:], np.zeros((1, J.size, 1)), z[:1]]),
        False)[[3, 1]], rtol=1e-13, atol=1e-13)
