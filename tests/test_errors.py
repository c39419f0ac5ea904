"""Bad input gets a clear error, raised before any work, naming what is wrong."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers import ParameterError, ProblemError, SolverArgumentError, SolverError
from convexlayers.torch import CvxpyLayer
from zoo import interval, matrix_parameters, readme_problem, signed_parameters, unbounded


# -- construction ---------------------------------------------------------------
def test_non_dpp_names_the_expression():
    x = cp.Variable(2)
    a, b = cp.Parameter(name="alpha"), cp.Parameter(name="beta")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x) + a * b * cp.sum(x)))
    with pytest.raises(ProblemError, match=r"not DPP.*alpha @ beta|not DPP.*alpha \* beta"):
        CvxpyLayer(prob, [a, b], [x])


def test_non_dcp_problem():
    x = cp.Variable(2)
    p = cp.Parameter(2)
    prob = cp.Problem(cp.Maximize(cp.sum_squares(x) + p @ x), [x <= 1])
    with pytest.raises(ProblemError, match="not convex"):
        CvxpyLayer(prob, [p], [x])


def test_dgp_problem_without_gp_suggests_gp():
    x = cp.Variable(pos=True)
    a = cp.Parameter(pos=True)
    prob = cp.Problem(cp.Minimize(1 / x), [a * x <= 1])
    with pytest.raises(ProblemError, match="gp=True"):
        CvxpyLayer(prob, [a], [x])


def test_not_dgp_with_gp():
    x = cp.Variable()
    a = cp.Parameter()
    prob = cp.Problem(cp.Minimize(x - a), [x >= 0])
    with pytest.raises(ProblemError, match="log-log convex"):
        CvxpyLayer(prob, [a], [x], gp=True)


def test_parametric_quad_form_needs_quadratic_solver():
    x = cp.Variable(2)
    P = cp.Parameter((2, 2), PSD=True)
    prob = cp.Problem(cp.Minimize(cp.quad_form(x, P)), [cp.sum(x) == 1])
    with pytest.raises(ProblemError, match="CLARABEL"):
        CvxpyLayer(prob, [P], [x], solver="ECOS")


def test_psd_cone_with_ecos():
    X = cp.Variable((2, 2), symmetric=True)
    C = cp.Parameter((2, 2), symmetric=True)
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X)), [X >> 0, cp.trace(X) == 1])
    with pytest.raises(ProblemError, match="solver='ECOS' cannot solve"):
        CvxpyLayer(prob, [C], [X], solver="ECOS")


def test_missing_parameter():
    prob, A, _, x = readme_problem()
    with pytest.raises(ProblemError, match=r"\['b'\] are missing"):
        CvxpyLayer(prob, [A], [x])


def test_extra_parameter():
    prob, A, b, x = readme_problem()
    c = cp.Parameter(name="c")
    with pytest.raises(ProblemError, match=r"\['c'\] do not appear"):
        CvxpyLayer(prob, [A, b, c], [x])


def test_duplicated_parameter():
    prob, A, b, x = readme_problem()
    with pytest.raises(ProblemError, match=r"\['A'\] appear more than once"):
        CvxpyLayer(prob, [A, b, A], [x])


def test_parameters_not_a_list():
    prob, A, _, x = readme_problem()
    with pytest.raises(ProblemError, match="Wrap a single parameter"):
        CvxpyLayer(prob, A, [x])


def test_variable_not_in_problem():
    prob, A, b, x = readme_problem()
    y = cp.Variable(2, name="y")
    with pytest.raises(ProblemError, match="y is neither a variable"):
        CvxpyLayer(prob, [A, b], [x, y])


def test_unknown_solver_and_args():
    prob, A, b, x = readme_problem()
    with pytest.raises(SolverArgumentError, match="unknown solver 'GUROBIX'"):
        CvxpyLayer(prob, [A, b], [x], solver="GUROBIX")
    with pytest.raises(SolverArgumentError, match="not_a_setting"):
        CvxpyLayer(prob, [A, b], [x], solver_args={"not_a_setting": 1})


# -- call time ------------------------------------------------------------------
@pytest.fixture
def layer():
    prob, A, b, x = readme_problem()
    return CvxpyLayer(prob, [A, b], [x])


def test_wrong_number_of_tensors(layer):
    with pytest.raises(ParameterError, match=r"takes 2 parameter values \(A, b"):
        layer(torch.ones(3, 2))


def test_none_parameter(layer):
    with pytest.raises(ParameterError, match="parameter 'b': received None"):
        layer(torch.ones(3, 2), None)


def test_wrong_shape_names_expected_and_received(layer):
    with pytest.raises(ParameterError, match=r"'A': expected shape \(3, 2\).*received \(2, 3\)"):
        layer(torch.ones(2, 3), torch.ones(3))


def test_inconsistent_batch(layer):
    with pytest.raises(ParameterError, match=r"batch sizes disagree.*'A' has 4.*'b' has 5"):
        layer(torch.ones(4, 3, 2), torch.ones(5, 3))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(layer, bad):
    b = torch.ones(2, 3, dtype=torch.float64)
    b[1, 0] = bad
    with pytest.raises(ParameterError, match=r"'b': contains NaN or Inf in batch elements \[1\]"):
        layer(torch.ones(3, 2, dtype=torch.float64), b)


def test_domain_nonneg_and_pos():
    layer = CvxpyLayer(*signed_parameters())
    with pytest.raises(ParameterError, match=r"'lam': declared nonneg=True.*-0.5"):
        layer(torch.tensor(-0.5), torch.ones(2))
    with pytest.raises(ParameterError, match="'c': declared pos=True"):
        layer(torch.tensor(1.0), torch.tensor([1.0, 0.0]))


def test_domain_symmetric_and_psd():
    layer = CvxpyLayer(*matrix_parameters())
    eye = torch.eye(2, dtype=torch.float64)
    # Symmetric and PSD parameters are symmetrized, not checked for symmetry: P's
    # symmetric part is PSD, so P is accepted and acts as (P + Pᵀ)/2.
    P = torch.tensor([[2.0, 0.5], [-0.5, 1.0]], dtype=torch.float64)
    S = torch.tensor([[0.0, 1.0], [0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(layer(P, S), layer(0.5 * (P + P.T), 0.5 * (S + S.T)))
    with pytest.raises(ParameterError, match=r"'P': declared positive semidefinite.*eigenvalue -1"):
        layer(torch.diag(torch.tensor([1.0, -1.0])), eye)


def test_infeasible_names_batch_indices_and_keeps_the_rest():
    layer = CvxpyLayer(*interval())
    lo_v = torch.tensor([0.0, 2.0, 0.0, 5.0], dtype=torch.float64)
    hi_v = torch.ones(4, dtype=torch.float64)
    with pytest.raises(SolverError, match=r"batch elements \[1: infeasible, 3: infeasible\]") as e:
        layer(lo_v, hi_v)
    assert e.value.indices == [1, 3]
    kept = e.value.outputs[0]
    np.testing.assert_allclose(kept[[0, 2]], [0.0, 0.0], atol=1e-7)
    assert np.isnan(kept[[1, 3]]).all()


def test_unbounded_unbatched():
    layer = CvxpyLayer(*unbounded())
    with pytest.raises(SolverError, match=r"the problem \(unbounded\)"):
        layer(torch.tensor(-1.0))


def test_bad_per_call_solver_args(layer):
    with pytest.raises(SolverArgumentError, match="expected a dict"):
        layer(torch.ones(3, 2), torch.ones(3), solver_args=[("eps", 1)])
    with pytest.raises(SolverArgumentError, match="bogus"):
        layer(torch.ones(3, 2), torch.ones(3), solver_args={"bogus": 1})
