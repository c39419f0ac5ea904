"""Second-order cones in the native backend: the NT scaling and Jordan algebra checked by
their identities, random SOCPs against Clarabel (outputs, duals, gradients against
finite differences), infeasible elements mixed into a batch."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers import SolverStatus
from convexlayers._core import SolutionMap
from convexlayers.solvers._cone_ops import Cones
from convexlayers.solvers._native import dense_profile
from convexlayers.torch import CvxpyLayer
from native_check import check_max_step, check_native

CONES = Cones(3, (4, 2, 4, 5))


def _inside(rng, B):
    v = rng.standard_normal((B, 3 + 15))
    return v + (np.maximum(0.0, -CONES.min_eig(v)) + 0.3)[:, None] * CONES.identity()


def test_nt_scaling_and_jordan_identities():
    rng = np.random.default_rng(0)
    s, z, r = _inside(rng, 7), _inside(rng, 7), rng.standard_normal((7, 18))
    sc = CONES.scaling(s, z)
    lam = sc.w(z)
    np.testing.assert_allclose(lam, sc.winv(s), atol=1e-12)  # W z = W⁻ᵀ s = λ
    np.testing.assert_allclose((lam * lam).sum(1), (s * z).sum(1), rtol=1e-12)
    np.testing.assert_allclose(sc.lam(z), lam)
    np.testing.assert_allclose(CONES.prod(lam, sc.div(lam, r)), r, atol=1e-12)
    np.testing.assert_allclose(sc.hinv(sc.w(sc.w(r))), r, atol=1e-11)
    for (_, rows), M in zip(CONES.groups, sc.soc_blocks(), strict=True):
        np.testing.assert_allclose((M @ r[:, rows, None])[..., 0], sc.hinv(r)[:, rows],
                                   atol=1e-11)


@pytest.mark.parametrize("primal", [True, False])
def test_max_step_reaches_the_boundary(primal):
    rng = np.random.default_rng(1)
    v, other, dv = _inside(rng, 50), _inside(rng, 50), 3.0 * rng.standard_normal((50, 18))
    check_max_step(CONES, v, other, dv, primal)


def _socp(rng, n=5, m=6):
    x = cp.Variable(n)
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    t = cp.Parameter(nonneg=True)
    cons = [cp.norm(x[:3]) <= t, cp.norm(x, 1) <= 4.0]
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b) + c @ x), cons)
    return prob, [A, b, c, t], [x, cons[0].dual_variables[0]]


def _values(rng, B, n=5, m=6):
    return [rng.standard_normal((B, m, n)), rng.standard_normal((B, m)),
            rng.standard_normal((B, n)), rng.uniform(0.5, 2.0, B)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_socps_match_clarabel_and_finite_differences(seed):
    rng = np.random.default_rng(seed)
    prob, params, variables = _socp(rng)
    check_native(prob, params, variables, _values(rng, 8), rng)


def test_infeasible_soc_elements_are_certified_and_the_rest_kept():
    x, t = cp.Variable(3), cp.Parameter()
    c = cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(c @ x), [cp.norm(x) <= t, x[0] >= 0.0])
    layer = CvxpyLayer(prob, parameters=[c, t], variables=[x], solver="NATIVE",
                       on_failure="nan")
    rng = np.random.default_rng(4)
    tv = rng.uniform(0.5, 2.0, 6)
    tv[[1, 4]] = -1.0  # ‖x‖ ≤ −1: infeasible
    (out,) = layer(torch.tensor(rng.standard_normal((6, 3))), torch.tensor(tv))
    assert layer.info.failed == (1, 4)
    assert layer.info.status[1] is SolverStatus.INFEASIBLE
    assert torch.isfinite(out[[0, 2, 3, 5]]).all()
    np.testing.assert_allclose(out[[0, 2, 3, 5]].norm(dim=1).numpy(), tv[[0, 2, 3, 5]],
                               rtol=1e-8)


def test_the_automatic_choice_leaves_socps_to_clarabel():
    prob, params, variables = _socp(np.random.default_rng(5))
    smap = SolutionMap(prob, params, variables)
    assert dense_profile(smap.program("CLARABEL").data) is None
    layer = CvxpyLayer(prob, parameters=params, variables=variables)
    layer(*[torch.tensor(v) for v in _values(np.random.default_rng(6), 64)])
    assert layer.info.solver == "CLARABEL"
