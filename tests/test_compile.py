"""The compile step on its own: retrieval of outputs and parameter maps, against CVXPY."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from convexlayers._core import SolutionMap
from convexlayers.compile import _retrieval
from convexlayers.compile._canon import canonicalize
from convexlayers.compile._checks import resolve_outputs


def _exotic():
    """Constraints whose duals CVXPY recovers through several reductions."""
    x, t, X = cp.Variable(3), cp.Variable(), cp.Variable((2, 2))
    p = cp.Parameter(3)
    cons = [cp.abs(x) <= 2, cp.max(x) <= t, cp.norm1(x) <= 3, cp.norm(x, "inf") <= 1.5,
            X + X.T >> 0, cp.trace(X) == 1, cp.ExpCone(x[0], cp.Constant(1.0), t + 5),
            cp.PowCone3D(x[1] + 3, cp.Constant(2.0), x[2], 0.3), cp.geo_mean(x + 4) >= 1,
            x <= 10]
    prob = cp.Problem(cp.Minimize(p @ x + t + cp.sum_squares(X)), cons)
    outputs = [x, t, X, *(dv for c in cons for dv in c.dual_variables)]
    return prob, p, outputs


def test_every_dual_matches_cvxpy_on_exotic_constraints():
    prob, p, outputs = _exotic()
    value = np.array([1.0, -1.0, 0.5])
    sol = SolutionMap(prob, [p], outputs, refine=False).solve([value])  # the raw point
    p.value = value
    prob.solve(solver=cp.CLARABEL)
    for var, out in zip(outputs, sol.outputs, strict=True):
        np.testing.assert_allclose(out, np.reshape(var.value, out.shape), atol=1e-12)


def test_column_probing_fallback_equals_the_scaled_gather():
    """The fallback for outputs that are not one scaled entry of (x, y) each (none known
    today) must give the same map as the fast path where both apply."""
    prob, _, outputs = _exotic()
    canon = canonicalize(prob, False, True, frozenset({"soc", "psd", "exp", "power"}), "test")
    evaluate = _retrieval._evaluator(canon, resolve_outputs(prob, outputs), gp=False)
    size = canon.param_prog.x.size + canon.param_prog.constr_size
    gather = _retrieval._scaled_gather(evaluate, size)
    probed = _retrieval._column_probes(evaluate, size)
    np.testing.assert_allclose(probed.toarray(), gather.toarray(), atol=1e-14)


@pytest.mark.parametrize(
    "attribute",
    [
        "diag",
        # CVXPY's own reduction reads a sparse parameter's `.value` and warns about it
        pytest.param("sparsity", marks=pytest.mark.filterwarnings(
            "ignore:Reading from a sparse CVXPY expression:RuntimeWarning")),
    ],
)
def test_diag_and_sparse_parameters(attribute):
    """CVXPY reduces these parameters to their free entries; values still map right."""
    n = 3
    kwargs = {"diag": True} if attribute == "diag" else {"sparsity": ([0, 1, 2], [0, 2, 1])}
    D = cp.Parameter((n, n), **kwargs)
    x = cp.Variable(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(D @ x - 1) + 0.1 * cp.sum_squares(x)))
    value = np.zeros((n, n))
    rows, cols = (np.arange(n), np.arange(n)) if attribute == "diag" else kwargs["sparsity"]
    value[rows, cols] = [2.0, -1.0, 0.5]
    sol = SolutionMap(prob, [D], [x], refine=True).solve([value])
    ref = cp.Problem(cp.Minimize(cp.sum_squares(value @ x - 1) + 0.1 * cp.sum_squares(x)))
    ref.solve(solver=cp.CLARABEL)
    np.testing.assert_allclose(sol.outputs[0], x.value, atol=1e-6)


def test_layer_builds_after_problem_solve_with_a_scalar_dual_requested():
    """problem.solve() stores a scalar constraint's dual with shape (1,). Building the
    retrieval map saves and restores the user's dual values, and the restore used the
    validating `value` setter, which rejected that shape."""
    x, r = cp.Variable(2), cp.Parameter(nonneg=True)
    con = cp.sum_squares(x) <= r
    prob = cp.Problem(cp.Minimize(cp.sum(x)), [con])
    r.value = 1.0
    prob.solve(solver=cp.CLARABEL)
    before = np.array(con.dual_value, copy=True)
    torch = pytest.importorskip("torch")
    from convexlayers.torch import CvxpyLayer

    layer = CvxpyLayer(prob, [r], [x, con.dual_variables[0]])
    _, dual = layer(torch.tensor(1.0, dtype=torch.float64))
    # CVXPY's dual is Clarabel's point (~1e-6 off on a second-order cone); ours is polished.
    np.testing.assert_allclose(dual.numpy(), np.reshape(before, ()), atol=1e-5)
    np.testing.assert_array_equal(con.dual_value, before)  # left as CVXPY stored it
