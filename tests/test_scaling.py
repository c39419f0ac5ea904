"""Residuals are measured on the data equilibrated to order one, so that rows, columns or
an objective of tiny scale cannot hide an inexact solution.

A relative residual ||N|| / (1 + ||q|| + ||b||) is absolute for data below order one: an
LP whose inequality rows and cost are scaled by 1e-4 (its bounds not) was returned off by
3e-5 with a residual of 7.5e-10, under the 1e-9 target, and no warning.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers import InaccurateSolutionWarning
from convexlayers.cones import project_dual, project_primal
from convexlayers.derivative import kkt_residual
from convexlayers.torch import CvxpyLayer
from test_derivative import DIMS, _Structure

# The cone blocks of DIMS["all"] (rows [lo, hi)): zero, nonneg, nonneg, a second-order
# cone of 3, a 2×2 PSD cone (3 rows), an exponential and a power cone.
_BLOCKS = [(0, 1), (1, 2), (2, 3), (3, 6), (6, 9), (9, 12), (12, 15)]


def _program(rng, quadratic):
    """Random data whose cone blocks of [A | b] have largest row norm 1, and a point
    (x, y, s) with y ∈ K*, s ∈ K, yᵀs = 0 that is not a solution."""
    dims, n = DIMS["all"], 4
    st = _Structure(n, dims.size, dims, quadratic)
    A, b = rng.standard_normal((dims.size, n)), rng.standard_normal(dims.size)
    for lo, hi in _BLOCKS:
        big = max(np.linalg.norm(A[lo:hi], axis=1).max(), np.abs(b[lo:hi]).max())
        A[lo:hi], b[lo:hi] = A[lo:hi] / big, b[lo:hi] / big
    L = rng.standard_normal((n, n))
    p = (L @ L.T)[st.P.rows, st.P.cols] if quadratic else np.zeros(0)
    v = rng.standard_normal((1, dims.size))
    point = rng.standard_normal((1, n)), project_dual(dims, v), project_primal(dims, -v)
    return st, p, rng.standard_normal(n), A, b, point


def _data(p, q, A, b):
    return np.concatenate([p, q, A.ravel("F"), b])[None]


@pytest.mark.parametrize("quadratic", [False, True])
@pytest.mark.parametrize("block", range(len(_BLOCKS)))
def test_residual_is_invariant_to_scaling_a_cone_block(quadratic, block):
    """A block of rows scaled by 1e-3 (its duals by 1e3, its slacks by 1e-3) is the same
    problem at the same point: the relative residual is the same."""
    st, p, q, A, b, (x, y, s) = _program(np.random.default_rng(block), quadratic)
    lo, hi = _BLOCKS[block]
    t = 1e-3
    A2, b2, y2, s2 = A.copy(), b.copy(), y.copy(), s.copy()
    A2[lo:hi] *= t
    b2[lo:hi] *= t
    y2[:, lo:hi] /= t
    s2[:, lo:hi] *= t
    before = kkt_residual(st, _data(p, q, A, b), x, y, s)
    after = kkt_residual(st, _data(p, q, A2, b2), x, y2, s2)
    assert before[0] > 1e-3  # not a solution: a residual to compare
    np.testing.assert_allclose(after, before, rtol=1e-10)


def _mixed_scale_lp(rng, n=37, m=31, batch=16):
    """min cᵀx s.t. A x <= b, |x| <= u: values of (A, b, c) at order one, and u."""
    x0 = rng.standard_normal((batch, n)) * 0.5
    A = rng.standard_normal((batch, m, n))
    b = np.einsum("bmn,bn->bm", A, x0) + rng.uniform(0, 1, (batch, m))
    c = rng.standard_normal((batch, n))
    u = np.abs(x0) + rng.uniform(0.5, 3, (batch, n))
    return A, b, c, u


@pytest.mark.parametrize("solver", ["CLARABEL", "NATIVE"])
@pytest.mark.parametrize("seed", [8, 12])
def test_rows_and_cost_of_tiny_scale_give_the_exact_solution_or_a_warning(solver, seed):
    """The LP with A, b, c scaled by 1e-4 and the bounds u not has the same solution. Each
    element is exact, or its residual says it is not and a warning names it (seed 8 holds
    a nearly flat face: Clarabel's point is off by 3e-2 at an objective 6e-9 away)."""
    n, m = 37, 31
    x = cp.Variable(n)
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    u = cp.Parameter(n, nonneg=True)
    prob = cp.Problem(cp.Minimize(c @ x), [A @ x <= b, x <= u, x >= -u])
    layer = CvxpyLayer(prob, [A, b, c, u], [x], solver=solver)
    Av, bv, cv, uv = (torch.tensor(v) for v in _mixed_scale_lp(np.random.default_rng(seed)))
    (exact,) = layer(Av, bv, cv, uv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (tiny,) = layer(1e-4 * Av, 1e-4 * bv, 1e-4 * cv, uv)
    err = ((tiny - exact).norm(dim=1) / exact.norm(dim=1)).numpy()
    flagged = layer.info.residual > 1e-9
    assert (err[~flagged] < 1e-9).all(), err
    warned = [w for w in caught if issubclass(w.category, InaccurateSolutionWarning)]
    assert bool(warned) == flagged.any()
    for i in np.flatnonzero(flagged):
        assert str(i) in str(warned[0].message)


def _rows_of_three_scales_lp(seed, batch=8):
    """min cᵀx s.t. A x <= b, |x| <= 10 with a third of the rows of (A, b) at 1e-6 and
    a third at 1e2 (the same constraints as at order one)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 9))
    m = int(rng.integers(n + 1, 2 * n + 4))
    A0, x0 = rng.standard_normal((m, n)), rng.standard_normal(n)
    b0 = A0 @ x0 + rng.uniform(0.1, 1, m)
    rows = np.ones(m)
    rows[: m // 3], rows[m // 3: 2 * (m // 3)] = 1e-6, 1e2
    A = A0 + 0.1 * rng.standard_normal((batch, m, n))
    b = b0 + 0.02 * rng.standard_normal((batch, m))
    c = rng.standard_normal(n) + 0.1 * rng.standard_normal((batch, n))
    x = cp.Variable(n)
    Ap, bp, cpar = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cpar @ x), [Ap @ x <= bp, cp.abs(x) <= 10])
    return prob, [Ap, bp, cpar], x, [A * rows[:, None], b * rows, c]


@pytest.mark.parametrize("seed", [2, 5, 82])
def test_rows_of_very_different_scales_are_exact_or_warned(seed):
    """Each element is within 1e-6 of CVXPY's tight solution, or its residual exceeds
    the target and a warning names it (the residual relative to 1 + ||q|| + ||b|| let
    such elements through 1e-1 off; a face read from the sign of y − s at the
    unequilibrated scale stopped polishing at 3e-3)."""
    prob, params, x, values = _rows_of_three_scales_lp(seed)
    layer = CvxpyLayer(prob, params, [x])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (out,) = layer(*(torch.tensor(v) for v in values))
    flagged = layer.info.residual > 1e-9
    for i in np.flatnonzero(~flagged):
        for p, v in zip(params, values, strict=True):
            p.value = v[i]
        prob.solve(solver="CLARABEL", tol_gap_abs=1e-13, tol_gap_rel=1e-13, tol_feas=1e-13)
        err = np.abs(out[i].numpy() - x.value).max() / np.abs(x.value).max()
        assert err < 1e-6, (i, err)
    warned = any(issubclass(w.category, InaccurateSolutionWarning) for w in caught)
    assert warned == flagged.any()
