"""PSD cones in the native backend: the NT scaling and Jordan algebra of symmetric
matrices checked by their identities, the sparse products of the reduced Hessian against
dense ones, random SDPs (an LMI, nearest correlation, MaxCut, two PSD cones with a
second-order cone) against Clarabel with gradients against finite differences, and
infeasible elements mixed into a batch."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers import SolverStatus
from convexlayers._core import SolutionMap
from convexlayers.cones._psd import smat, svec
from convexlayers.solvers._cone_ops import Cones
from convexlayers.solvers._native import batch_qp, dense_profile
from convexlayers.solvers._reduced import Layout, layout_for
from convexlayers.torch import CvxpyLayer
from native_check import check_max_step, check_native, numpy_layer

CONES = Cones(2, (3,), (4, 2, 4))  # svec sizes 10, 3, 10: 28 rows


def _inside(rng, B):
    v = rng.standard_normal((B, CONES.size))
    return v + (np.maximum(0.0, -CONES.min_eig(v)) + 0.3)[:, None] * CONES.identity()


def test_psd_nt_scaling_and_jordan_identities():
    rng = np.random.default_rng(0)
    s, z, r = _inside(rng, 6), _inside(rng, 6), rng.standard_normal((6, CONES.size))
    sc = CONES.scaling(s, z)
    lam = sc.w(z)
    np.testing.assert_allclose(lam, sc.winv_t(s), atol=1e-12)  # W z = W⁻ᵀ s = λ
    np.testing.assert_allclose(sc.winv(sc.w(r)), r, atol=1e-11)
    np.testing.assert_allclose((lam * lam).sum(1), (s * z).sum(1), rtol=1e-12)
    for k, rows in CONES.psd_groups:  # λ is diagonal on each PSD cone
        L = smat(lam[:, rows], k)
        np.testing.assert_allclose(L - L * np.eye(k), 0.0, atol=1e-12)
    exact = sc.lam(z)  # the same λ, its PSD blocks from the SVD's singular values
    np.testing.assert_allclose(exact, lam, atol=1e-12)
    np.testing.assert_allclose(CONES.prod(exact, sc.div(exact, r)), r, atol=1e-11)
    # (WᵀW)⁻¹ as blocks equals the operator, and ⟨u, W v⟩ = ⟨Wᵀ u, v⟩ with Wᵀ = (W⁻ᵀ)⁻¹
    for (_, rows), M in zip(CONES.psd_groups, sc.psd_blocks(), strict=True):
        np.testing.assert_allclose((M @ r[:, rows, None])[..., 0], sc.hinv(r)[:, rows],
                                   atol=1e-10)
        np.testing.assert_allclose(M, np.swapaxes(M, -1, -2), atol=1e-12)
    u = rng.standard_normal(r.shape)
    np.testing.assert_allclose((sc.winv(u) * r).sum(1), (u * sc.winv_t(r)).sum(1),
                               rtol=1e-10)


@pytest.mark.parametrize("primal", [True, False])
def test_psd_max_step_reaches_the_boundary(primal):
    """The step to the boundary, taken in the scaled space (λ + α W⁻ᵀ ds for s,
    λ + α W dz for z), is the step of the unscaled point."""
    rng = np.random.default_rng(1)
    v, other = _inside(rng, 40), _inside(rng, 40)
    dv = 3.0 * rng.standard_normal((40, CONES.size))
    check_max_step(CONES, v, other, dv, primal)


def test_raise_to_lifts_the_least_eigenvalue():
    rng = np.random.default_rng(2)
    v = rng.standard_normal((5, CONES.size))
    floor = rng.uniform(0.1, 1.0, 5)
    CONES.raise_to(v, floor)
    assert (CONES.min_eig(v) >= floor - 1e-12).all()
    k, rows = CONES.psd_groups[0]
    np.testing.assert_allclose(svec(np.eye(k)), CONES.identity()[rows[0]])


def _lmi(m=3, k=4):
    """min t + ‖x‖² s.t. t I − A₀ − Σ xᵢ Aᵢ ⪰ 0: the largest eigenvalue, an LMI whose
    svec rows are dense in x."""
    x, t = cp.Variable(m), cp.Variable()
    A = [cp.Parameter((k, k), symmetric=True) for _ in range(m + 1)]
    lmi = t * np.eye(k) - A[0] - sum(x[i] * A[i + 1] for i in range(m))
    cons = [lmi >> 0]
    prob = cp.Problem(cp.Minimize(t + cp.sum_squares(x)), cons)
    return prob, A, [x, t, cons[0].dual_variables[0]]


def _correlation(k=4):
    """The nearest correlation matrix: min ‖X − C‖_F² s.t. X ⪰ 0, diag X = 1."""
    X, C = cp.Variable((k, k), symmetric=True), cp.Parameter((k, k), symmetric=True)
    cons = [X >> 0, cp.diag(X) == 1]
    return cp.Problem(cp.Minimize(cp.sum_squares(X - C)), cons), [C], [X]


def _two_cones(k1=3, k2=4):
    """Two PSD cones, a second-order cone and an ℓ1 bound coupling them."""
    X = cp.Variable((k1, k1), symmetric=True)
    Y = cp.Variable((k2, k2), symmetric=True)
    u = cp.Variable(3)
    C1 = cp.Parameter((k1, k1), symmetric=True)
    C2 = cp.Parameter((k2, k2), symmetric=True)
    c = cp.Parameter(3)
    cons = [X >> 0, Y >> 0, cp.trace(X) == 1, cp.trace(Y) == 2,
            cp.norm(u, 1) <= X[0, 0] + Y[0, 0] + 1]
    obj = cp.trace(C1 @ X) + cp.trace(C2 @ Y) + c @ u + cp.norm(u) + cp.sum_squares(X)
    return cp.Problem(cp.Minimize(obj), cons), [C1, C2, c], [X, Y, u]


def _symmetric(rng, B, k):
    G = rng.standard_normal((B, k, k))
    return 0.5 * (G + np.swapaxes(G, 1, 2))


def _values(params, rng, B):
    return [_symmetric(rng, B, p.shape[0]) if p.ndim == 2 else rng.standard_normal((B,
            *p.shape)) for p in params]


PROBLEMS = {"lmi": _lmi, "correlation": _correlation, "two_cones": _two_cones}


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_random_sdps_match_clarabel_and_finite_differences(name):
    rng = np.random.default_rng(len(name))
    prob, params, variables = PROBLEMS[name]()
    check_native(prob, params, variables, _values(params, rng, 6), rng)


def test_sparse_hessian_products_equal_dense_ones():
    """A PSD variable's own svec rows and an ℓ1 bound are sparse: their part of
    A_lᵀ (WᵀW)⁻¹ A_l comes from pairs of nonzeros, equal to the dense products."""
    prob, params, variables = _two_cones()
    smap = SolutionMap(prob, params, variables)
    data = smap.program("NATIVE").data
    rng = np.random.default_rng(3)
    qp = batch_qp(data, data.apply(smap._theta(_values(params, rng, 4))[0]))
    layout = layout_for(qp)
    assert any(p is not None for p in layout.pairs[-len(qp.cone.psd_groups):])
    dense = Layout(layout.plan, tuple(None for _ in layout.pairs), layout.gram)
    e = qp.cone.identity()
    s, z = (e + 0.05 * rng.standard_normal((4, e.size)) for _ in range(2))
    n = qp.q.shape[1]
    for scaling in (None, qp.cone.scaling(s, z)):
        sparse_h, dense_h = np.full((2, 4, n, n), np.nan)
        layout.hessian(qp, scaling, sparse_h)
        dense.hessian(qp, scaling, dense_h)
        np.testing.assert_allclose(sparse_h, dense_h, atol=1e-10)


def test_infeasible_sdp_elements_are_certified_and_the_rest_kept():
    """X ⪰ 0 with trace X = t: infeasible for t < 0."""
    k = 3
    X, C, t = cp.Variable((k, k), symmetric=True), cp.Parameter((k, k), symmetric=True), \
        cp.Parameter()
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X)),
                      [X >> 0, cp.trace(X) == t])
    layer = CvxpyLayer(prob, parameters=[C, t], variables=[X], solver="NATIVE",
                       on_failure="nan")
    rng = np.random.default_rng(4)
    tv = rng.uniform(0.5, 2.0, 6)
    tv[[2, 5]] = -1.0
    (out,) = layer(torch.tensor(_symmetric(rng, 6, k)), torch.tensor(tv))
    assert layer.info.failed == (2, 5)
    assert layer.info.status[2] is SolverStatus.INFEASIBLE
    ok = [0, 1, 3, 4]
    np.testing.assert_allclose(np.trace(out[ok].numpy(), axis1=1, axis2=2), tv[ok], rtol=1e-8)
    assert (np.linalg.eigvalsh(out[ok].numpy()).min(axis=1) >= -1e-9).all()


def test_maxcut_relaxation_reaches_the_accuracy_polishing_finishes():
    """MaxCut's SDP relaxation (an LP objective, a low-rank solution): the IPM's formed
    Hessian loses accuracy near the end, so elements may stop short of 1e-9, but within
    REDUCED_TOL, and the layer's outputs equal Clarabel's after polishing."""
    k = 5
    X, L = cp.Variable((k, k), symmetric=True), cp.Parameter((k, k), symmetric=True)
    prob = cp.Problem(cp.Maximize(cp.trace(L @ X)), [X >> 0, cp.diag(X) == 1])
    values = [_symmetric(np.random.default_rng(5), 8, k)]
    native = CvxpyLayer(prob, parameters=[L], variables=[X], solver="NATIVE")
    clarabel = CvxpyLayer(prob, parameters=[L], variables=[X], solver="CLARABEL")
    np.testing.assert_allclose(numpy_layer(native)(values)[0],
                               numpy_layer(clarabel)(values)[0], atol=1e-8)
    assert native.info.solver == "NATIVE" and not native.info.failed
    assert (native.info.residual <= 1e-9).all()


def test_the_automatic_choice_leaves_sdps_to_clarabel():
    prob, params, variables = _correlation()
    smap = SolutionMap(prob, params, variables)
    assert dense_profile(smap.program("CLARABEL").data) is None
    layer = CvxpyLayer(prob, parameters=params, variables=variables)
    layer(*[torch.tensor(v) for v in _values(params, np.random.default_rng(6), 64)])
    assert layer.info.solver == "CLARABEL"


def test_a_diverging_element_does_not_break_the_scaling():
    """Entries near overflow (an infeasible element on its way out; the product of
    its factors overflows) leave the scaling of the rest of the batch finite and right:
    NumPy's batched SVD returns NaN for that element rather than raising."""
    rng = np.random.default_rng(7)
    s, z = _inside(rng, 3), _inside(rng, 3)
    k, rows = CONES.psd_groups[-1]
    big = svec(1e308 * (np.eye(k) + 0.5 * np.ones((k, k))) / 1.5)  # finite, PD
    s[1, rows[0]], z[1, rows[0]] = big, big  # their factors' product overflows
    with np.errstate(all="ignore"):  # as in the IPM: the element overflows
        sc = CONES.scaling(s, z)
    for R, _, lam in sc.psd:
        assert np.isfinite(R[[0, 2]]).all() and np.isfinite(lam[[0, 2]]).all()
    np.testing.assert_allclose(sc.lam(z)[[0, 2]], sc.winv_t(s)[[0, 2]], atol=1e-11)
