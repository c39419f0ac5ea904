"""Tests of the exponential and power cone projections and their Jacobians.

Test points are built from the optimality conditions where possible: for a
boundary point p with outward normal n = ∇f(p), Π(p + t n) = p for every t >= 0,
which gives exact reference projections in the boundary case. Membership checks
are written here independently of the library, and tolerant of rounding in a
principled way (a violation is measured as a distance, not as a residual of an
exponential or a power that can amplify a rounding error by e^700).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from convexlayers.cones import (
    ConeDims,
    dual_projection_jacobian,
    exp_projection_jacobian,
    power_projection_jacobian,
    project_dual,
    project_exp,
    project_power,
    project_primal,
)

SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))
# Tighter settings make Clarabel report "inaccurate" (a warning) on some of these points.
CLARABEL_TIGHT = {
    "tol_gap_abs": 1e-11,
    "tol_gap_rel": 1e-11,
    "tol_feas": 1e-11,
    "tol_ktratio": 1e-10,
}


def fd_jacobian(fun, v: np.ndarray) -> np.ndarray:
    """Central differences with step sqrt(eps) ||v|| of a row-wise map (N, 3) -> (N, 3)."""
    step = SQRT_EPS * np.linalg.norm(v, axis=1)
    jac = np.empty((v.shape[0], 3, 3))
    for j in range(3):
        e = np.zeros_like(v)
        e[:, j] = step
        jac[:, :, j] = (fun(v + e) - fun(v - e)) / (2.0 * step[:, None])
    return jac


def assert_valid_jacobian(jac: np.ndarray, tol: float = 1e-12) -> None:
    assert np.all(np.isfinite(jac))
    np.testing.assert_allclose(jac, np.swapaxes(jac, 1, 2), atol=tol)
    eig = np.linalg.eigvalsh(jac)
    assert eig.min() >= -tol and eig.max() <= 1 + tol


def log_uniform(rng, lo: float, hi: float, n: int) -> np.ndarray:
    return 10.0 ** rng.uniform(lo, hi, n)


# ------------------------------------------------------ membership checks


def _exp_distance(a, b, c):
    """max(F, 0) / ||∇F|| for F = b e^{a/b} - c (b > 0), scaled by e^{-max(a/b, 0)}."""
    r = a / b
    big = np.maximum(r, 0.0)
    e_r = np.exp(r - big)
    f = b * e_r - c * np.exp(-big)
    grad = np.stack([e_r, e_r * (1.0 - r), -np.exp(-big)], axis=1)
    return np.maximum(f, 0.0) / np.linalg.norm(grad, axis=1)


def exp_violation(p: np.ndarray) -> np.ndarray:
    """Approximate distance from p to K_exp = cl{(x, y, z): y e^{x/y} <= z}."""
    x, y, z = p.T
    out = np.maximum.reduce([np.maximum(x, 0), np.abs(y), np.maximum(-z, 0)])
    pos = y > 0
    out[pos] = _exp_distance(x[pos], y[pos], z[pos])
    return out


def exp_polar_violation(d: np.ndarray) -> np.ndarray:
    """Approximate distance from d to the polar -K*, K* = {u < 0: -u e^{v/u} <= e w} ∪ ..."""
    u, v, w = (-d).T
    out = np.maximum.reduce([np.abs(u), np.maximum(-v, 0), np.maximum(-w, 0)])
    neg = u < 0
    # G = -u e^{r} - e w with r = v/u; everything scaled by e^{-max(r, 0)}.
    r = v[neg] / u[neg]
    big = np.maximum(r, 0.0)
    e_r = np.exp(r - big)
    f = -u[neg] * e_r - np.e * w[neg] * np.exp(-big)
    grad = np.stack([e_r * (r - 1.0), -e_r, -np.e * np.exp(-big)], axis=1)
    out[neg] = np.maximum(f, 0.0) / np.linalg.norm(grad, axis=1)
    return out


def power_member(p: np.ndarray, a: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Is there a point of K_a within ~tol of p? (monotone in x and y, so shift them by tol)."""
    x, y, z = p.T
    ok = (x >= -tol) & (y >= -tol)
    geo = np.maximum(x + tol, 0) ** a * np.maximum(y + tol, 0) ** (1 - a)
    return ok & (geo >= np.abs(z) - tol)


def power_polar_member(d: np.ndarray, a: np.ndarray, tol: np.ndarray) -> np.ndarray:
    """Is -d within ~tol of K_a* = {(u/a)^a (v/(1-a))^(1-a) >= |w|, u, v >= 0}?"""
    u, v, w = (-d).T
    ok = (u >= -tol) & (v >= -tol)
    geo = (np.maximum(u + tol, 0) / a) ** a * (np.maximum(v + tol, 0) / (1 - a)) ** (1 - a)
    return ok & (geo >= np.abs(w) - tol)


def _normalized(v, p):
    """v, p and v - p divided by max |v_i| per row (the checks are homogeneous)."""
    scale = np.abs(v).max(axis=1, keepdims=True)
    scale = np.where(scale > 0, scale, 1.0)
    return v / scale, p / scale, (v - p) / scale


def check_exp_optimality(v: np.ndarray, p: np.ndarray, rtol: float = 1e-12) -> None:
    assert np.all(np.isfinite(p))
    _, p, d = _normalized(v, p)
    assert np.all(exp_violation(p) <= rtol)
    assert np.all(exp_polar_violation(d) <= rtol)
    assert np.all(np.abs(np.sum(p * d, axis=1)) <= rtol)


def check_power_optimality(v, p, a, rtol: float = 1e-12) -> None:
    assert np.all(np.isfinite(p))
    _, p, d = _normalized(v, p)
    assert np.all(power_member(p, a, rtol))
    assert np.all(power_polar_member(d, a, rtol))
    assert np.all(np.abs(np.sum(p * d, axis=1)) <= rtol)


# ------------------------------------------------------- exponential cone


def exp_boundary(rng, n, rho_range=(-8.0, 8.0)):
    """Boundary points y (ρ, 1, e^ρ) and outward normals ∝ (1, 1 - ρ, -e^{-ρ})."""
    rho = rng.uniform(*rho_range, n)
    b = np.column_stack([rho, np.ones(n), np.exp(rho)])
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    normal = np.column_stack([np.ones(n), 1.0 - rho, -np.exp(-rho)])
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return b, normal


def exp_region_points(rng, n: int) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Points of every region (some near its boundary), with exact projections when known."""
    scale = log_uniform(rng, -6, 6, n)[:, None]
    b, nrm = exp_boundary(rng, n)
    t = log_uniform(rng, -4, 4, n)[:, None]  # distance to K relative to ||Π(v)||
    inward = np.array([-1.0, 0.0, 1.0]) / np.sqrt(2)
    depth = log_uniform(rng, -4, 0, n)[:, None]
    face = -np.abs(rng.standard_normal((n, 3))) - 0.05
    face[:, 2] *= rng.choice([-1.0, 1.0], n)
    polar_push = np.array([0.0, -1.0, -1.0]) / np.sqrt(2)
    return {
        "boundary": (scale * (b + t * nrm), scale * b),
        "inside": (scale * (b + depth * inward), None),
        "polar": (scale * (nrm + depth * polar_push), np.zeros((n, 3))),
        "face": (
            scale * face,
            scale * np.column_stack([face[:, 0], 0 * face[:, 0], face[:, 2].clip(0)]),
        ),
    }


EXP_EXTREMES = np.array(
    [
        [1.0, -1000.0, 0.0],
        [-1e3, 1e-3, 5.0],
        [1e-8, -1.0, 1e-3],
        [1.0, -35.0, 1e-3],
        [1e-200, 1e-250, 1.0],
        [0.0, 1.0, -1.0],
        [-1.0, 1e-8, -1e-3],
        [-0.85, 3.5e-9, -7.9e-9],
        [5.3e-3, -8.4e-2, 5.9e-12],
        [1e6, -1e-6, 1e-6],
        [-1e-6, 1e6, -1e6],
        [1e300, 1e300, -1e300],
        [1e-300, -1e-300, 1e-310],
        [0.0, 0.0, 0.0],
        [0.0, 0.0, 1.0],
        [0.0, 0.0, -1.0],
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [-1.0, 0.0, 0.0],
        [0.0, -1.0, 0.0],
    ]
)


def test_exp_projection_exact_in_every_region():
    rng = np.random.default_rng(100)
    for name, (v, ref) in exp_region_points(rng, 400).items():
        p = project_exp(v)
        check_exp_optimality(v, p)
        if name == "inside":
            ref = v
        np.testing.assert_allclose(p, ref, rtol=0, atol=1e-12 * np.abs(v).max(), err_msg=name)


def test_exp_projection_random_and_extreme_inputs():
    rng = np.random.default_rng(101)
    v = rng.standard_normal((4000, 3)) * 10.0 ** rng.uniform(-8, 8, (4000, 3))
    v *= 10.0 ** rng.uniform(-6, 6, (4000, 1))
    v = np.vstack([v, EXP_EXTREMES])
    p = project_exp(v)
    check_exp_optimality(v, p)
    row = np.abs(p).max(axis=1, keepdims=True)
    assert np.all(np.abs(project_exp(p) - p) <= 1e-12 * row)
    np.testing.assert_allclose(project_exp(EXP_EXTREMES[:1]), 0.0, atol=1e-300)
    np.testing.assert_array_equal(project_exp(EXP_EXTREMES[1:2]), EXP_EXTREMES[1:2])  # in K


def test_exp_projection_is_positively_homogeneous():
    rng = np.random.default_rng(102)
    v = rng.standard_normal((500, 3))
    p = project_exp(v)
    jac = exp_projection_jacobian(v)
    for c in [1e-150, 1e-6, 1e6, 1e150]:
        np.testing.assert_allclose(project_exp(c * v), c * p, rtol=1e-12, atol=1e-12 * c)
        np.testing.assert_allclose(exp_projection_jacobian(c * v), jac, atol=1e-12)


def test_exp_jacobian_matches_finite_differences():
    rng = np.random.default_rng(103)
    for name, (v, _) in exp_region_points(rng, 400).items():
        jac = exp_projection_jacobian(v)
        assert_valid_jacobian(jac)
        np.testing.assert_allclose(jac, fd_jacobian(project_exp, v), atol=1e-6, err_msg=name)


def test_exp_jacobian_known_regions():
    v = np.array([[-1.0, 1.0, 5.0], [1.0, -1.0, -5.0], [-1.0, -2.0, 3.0], [-1.0, -2.0, -3.0]])
    jac = exp_projection_jacobian(v)
    np.testing.assert_array_equal(jac[0], np.eye(3))
    np.testing.assert_array_equal(jac[1], 0.0)
    np.testing.assert_array_equal(jac[2], np.diag([1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(jac[3], np.diag([1.0, 0.0, 0.0]))


def test_exp_jacobian_valid_everywhere():
    rng = np.random.default_rng(104)
    v = rng.standard_normal((4000, 3)) * 10.0 ** rng.uniform(-8, 8, (4000, 3))
    v = np.vstack([v, EXP_EXTREMES])
    assert_valid_jacobian(exp_projection_jacobian(v))


# ------------------------------------------------------------- power cone


def power_boundary(rng, n, a):
    """Boundary points (X, Y, ±X^a Y^(1-a)) and outward normals ∇f = (-a r/X, -(1-a) r/Y, ±1)."""
    xx, yy = log_uniform(rng, -3, 3, n), log_uniform(rng, -3, 3, n)
    sign = rng.choice([-1.0, 1.0], n)
    r = xx**a * yy ** (1 - a)
    b = np.column_stack([xx, yy, sign * r])
    normal = np.column_stack([-a * r / xx, -(1 - a) * r / yy, sign])
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return b / nb, normal / np.linalg.norm(normal, axis=1, keepdims=True)


def power_region_points(rng, n: int, a: np.ndarray):
    """Points of the boundary case (exact projection known), of K and of the polar."""
    scale = log_uniform(rng, -6, 6, n)[:, None]
    b, nrm = power_boundary(rng, n, a)
    t = log_uniform(rng, -4, 4, n)[:, None]

    def interior(dual: bool) -> np.ndarray:
        # x, y >= 0.05 and |z| <= 0.99 of the bound: at least ~1e-3 from the boundary.
        xy = np.abs(rng.standard_normal((n, 2))) + 0.05
        wx, wy = (a, 1 - a) if dual else (1.0, 1.0)
        bound = (xy[:, 0] / wx) ** a * (xy[:, 1] / wy) ** (1 - a)
        return np.column_stack([xy, bound * rng.uniform(-0.99, 0.99, n)])

    inside = interior(dual=False)
    return {
        "boundary": (scale * (b + t * nrm), scale * b),
        "inside": (scale * inside, scale * inside),
        "polar": (-scale * interior(dual=True), np.zeros((n, 3))),
    }


POWER_EXTREMES = np.array(
    [
        [7.5e6, -9.9e3, -16.2],
        [1.0, -0.5, 1e-12],
        [-0.5, 1.0, 1e-12],
        [0.0, 1.0, 1e-3],
        [1.0, 0.0, 1e-3],
        [0.0, 0.0, 1.0],
        [-1e-300, -1e-300, 1.0],
        [1e300, -1e300, 1e300],
        [1e-8, 1e-8, 1.0],
        [-1.0, -1.0, 0.0],
        [2.0, -1.0, 0.0],
        [0.0, 0.0, 0.0],
    ]
)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.5, 0.8, 0.97])
def test_power_projection_exact_in_every_region(alpha):
    rng = np.random.default_rng(int(alpha * 100))
    n = 300
    a = np.full(n, alpha)
    for name, (v, ref) in power_region_points(rng, n, a).items():
        p = project_power(v, a)
        check_power_optimality(v, p, a)
        np.testing.assert_allclose(p, ref, rtol=0, atol=1e-12 * np.abs(v).max(), err_msg=name)


def test_power_projection_random_and_extreme_inputs():
    rng = np.random.default_rng(110)
    n = 4000
    v = rng.standard_normal((n, 3)) * 10.0 ** rng.uniform(-8, 8, (n, 3))
    v *= 10.0 ** rng.uniform(-6, 6, (n, 1))
    v = np.vstack([v, POWER_EXTREMES])
    a = rng.uniform(0.01, 0.99, v.shape[0])
    a[::4] = 0.5
    p = project_power(v, a)
    check_power_optimality(v, p, a)
    row = np.abs(p).max(axis=1, keepdims=True)
    assert np.all(np.abs(project_power(p, a) - p) <= 1e-12 * row)
    np.testing.assert_array_equal(project_power(POWER_EXTREMES[-2:-1], 0.3), [[2.0, 0.0, 0.0]])
    assert_valid_jacobian(power_projection_jacobian(v, a))


def test_power_projection_is_positively_homogeneous():
    rng = np.random.default_rng(111)
    v = rng.standard_normal((500, 3))
    a = rng.uniform(0.05, 0.95, 500)
    p, jac = project_power(v, a), power_projection_jacobian(v, a)
    for c in [1e-150, 1e-6, 1e6, 1e150]:
        np.testing.assert_allclose(project_power(c * v, a), c * p, rtol=1e-12, atol=1e-12 * c)
        np.testing.assert_allclose(power_projection_jacobian(c * v, a), jac, atol=1e-12)


@pytest.mark.parametrize("alpha", [0.05, 0.3, 0.5, 0.8, 0.97])
def test_power_jacobian_matches_finite_differences(alpha):
    rng = np.random.default_rng(120 + int(alpha * 100))
    n = 300
    a = np.full(n, alpha)
    for name, (v, _) in power_region_points(rng, n, a).items():
        jac = power_projection_jacobian(v, a)
        assert_valid_jacobian(jac)
        fd = fd_jacobian(lambda w: project_power(w, a), v)
        np.testing.assert_allclose(jac, fd, atol=1e-6, err_msg=name)


@pytest.mark.parametrize(
    ("alpha", "zz_plus", "zz_minus"),
    [(0.3, 0.0, 1.0), (0.5, 0.5, 0.5), (0.7, 1.0, 0.0)],
)
def test_power_jacobian_on_plane_z_zero(alpha, zz_plus, zz_minus):
    """On z = 0 the Jacobian is the limit of the boundary-case one as z -> 0."""
    v = np.array([[1.0, -0.5, 0.0], [-0.5, 1.0, 0.0]])
    jac = power_projection_jacobian(v, alpha)
    np.testing.assert_allclose(jac[0], np.diag([1.0, 0.0, zz_plus]))
    np.testing.assert_allclose(jac[1], np.diag([0.0, 1.0, zz_minus]))
    near = power_projection_jacobian(v + np.array([0.0, 0.0, 1e-9]), alpha)
    np.testing.assert_allclose(near, jac, atol=1e-6)
    if alpha == 0.5:  # smooth enough there for finite differences
        fd = fd_jacobian(lambda w: project_power(w, alpha), v)
        np.testing.assert_allclose(jac, fd, atol=1e-6)


def test_power_alpha_validation():
    v = np.ones((2, 3))
    with pytest.raises(ValueError, match="open interval"):
        project_power(v, 1.0)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        power_projection_jacobian(v, np.array([0.5, 0.5, 0.5]))


# ------------------------------------------- CVXPY / Clarabel as reference


def _solve(constraint_of, v: np.ndarray) -> np.ndarray:
    p = cp.Variable(3)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(p - v)), [constraint_of(p)])
    prob.solve(solver=cp.CLARABEL, **CLARABEL_TIGHT)
    assert prob.status == cp.OPTIMAL
    return p.value


def assert_matches_reference(p: np.ndarray, ref: np.ndarray, v: np.ndarray) -> None:
    """p agrees with the interior-point reference to its accuracy, and is no farther from v.

    Clarabel's solution is accurate to ~1e-7 here; ours is feasible (tested above)
    and, being the exact projection, at least as close to v up to the reference's
    own infeasibility.
    """
    scale = np.linalg.norm(v)
    np.testing.assert_allclose(p, ref, atol=2e-6 * scale)
    assert np.sum((p - v) ** 2) <= np.sum((ref - v) ** 2) + 1e-9 * scale**2


CVXPY_POINTS = np.array(
    [
        [1.0, -2.0, 0.5],
        [3.0, 1.0, -2.0],
        [-1.0, 2.0, -0.5],
        [0.5, 0.5, 0.1],
        [2.0, -0.1, 3.0],
        [-0.3, 0.2, 0.05],
    ]
)


def test_exp_projection_matches_cvxpy():
    p = project_exp(CVXPY_POINTS)
    # Moreau with an independent dual projection: (u, v, w) ∈ K*  <=>  (-v, -u, e w) ∈ K.
    y = project_dual(ConeDims(exp=len(CVXPY_POINTS)), -CVXPY_POINTS.reshape(1, -1))
    for i, v in enumerate(CVXPY_POINTS):
        assert_matches_reference(p[i], _solve(lambda q: cp.ExpCone(q[0], q[1], q[2]), v), v)
        ref_dual = _solve(lambda q: cp.ExpCone(-q[1], -q[0], np.e * q[2]), -v)
        assert_matches_reference(y[0, 3 * i : 3 * i + 3], ref_dual, -v)
        np.testing.assert_allclose(p[i] - ref_dual, v, atol=2e-6 * np.linalg.norm(v))


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.8])
def test_power_projection_matches_cvxpy(alpha):
    p = project_power(CVXPY_POINTS, alpha)
    dims = ConeDims(power=(alpha,) * len(CVXPY_POINTS))
    y = project_dual(dims, -CVXPY_POINTS.reshape(1, -1))
    for i, v in enumerate(CVXPY_POINTS):
        ref = _solve(lambda q: cp.PowCone3D(q[0], q[1], q[2], alpha), v)
        assert_matches_reference(p[i], ref, v)
        # (u, v, w) ∈ K_a*  <=>  (u/a, v/(1-a), w) ∈ K_a.
        ref_dual = _solve(lambda q: cp.PowCone3D(q[0] / alpha, q[1] / (1 - alpha), q[2], alpha), -v)
        assert_matches_reference(y[0, 3 * i : 3 * i + 3], ref_dual, -v)
        np.testing.assert_allclose(p[i] - ref_dual, v, atol=2e-6 * np.linalg.norm(v))


# ------------------------------------------------------ dual-cone Jacobian


def test_dual_jacobian_is_moreau_complement():
    rng = np.random.default_rng(130)
    v = rng.standard_normal((5, 3)) * 3
    alphas = (0.2, 0.4, 0.5, 0.6, 0.9)
    dims = ConeDims(exp=5, power=alphas)
    w = np.concatenate([v.ravel(), v.ravel()])[None]
    jac = dual_projection_jacobian(dims, w)
    primal = project_primal(dims, w)[0].reshape(10, 3)
    np.testing.assert_array_equal(primal[:5], project_exp(v))
    np.testing.assert_array_equal(primal[5:], project_power(v, np.array(alphas)))
    for j, (offset, block) in enumerate(jac.blocks):
        if j < 5:
            expected = np.eye(3) - exp_projection_jacobian(-v[j : j + 1])
        else:
            expected = np.eye(3) - power_projection_jacobian(-v[j - 5 : j - 4], alphas[j - 5])
        assert offset == 3 * j
        np.testing.assert_allclose(block, expected, atol=1e-15)


def test_empty_stacks():
    empty = np.zeros((0, 3))
    assert project_exp(empty).shape == (0, 3)
    assert exp_projection_jacobian(empty).shape == (0, 3, 3)
    assert project_power(empty, np.zeros(0) + 0.5).shape == (0, 3)
    assert power_projection_jacobian(empty, 0.5).shape == (0, 3, 3)


def test_non_finite_rows_give_nan():
    v = np.array([[np.nan, 1.0, 1.0], [1.0, -2.0, 0.5], [np.inf, 0.0, 1.0]])
    for p in (project_exp(v), project_power(v, 0.4)):
        assert np.all(np.isnan(p[[0, 2]])) and np.all(np.isfinite(p[1]))
    for jac in (exp_projection_jacobian(v), power_projection_jacobian(v, 0.4)):
        assert np.all(np.isnan(jac[[0, 2]])) and np.all(np.isfinite(jac[1]))


# ------------------------------------------------ root-finder safeguards


def _cubic(t, coef):
    """f(t) = t³ - c (increasing), with a useless (NaN) or a wild proposal."""
    (c, wild) = coef
    f = t**3 - c
    cand = np.where(wild > 0, t - 50.0 * np.sign(f), np.nan)
    return f, cand, 1e-15 * (np.abs(c) + 1.0)


def test_root_finder_survives_useless_proposals():
    """NaN or overshooting proposals: the bracketed bisection fallback still converges."""
    from convexlayers.cones._common import safeguarded_newton

    c = np.array([2.0, -5.0, 0.3, 2.0, -5.0, 0.3])
    wild = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    lo, hi = np.full(6, -10.0), np.full(6, 10.0)
    root = safeguarded_newton(_cubic, (c, wild), lo, hi, np.zeros(6))
    np.testing.assert_allclose(root, np.cbrt(c), rtol=1e-14)
    # A degenerate bracket returns the starting point without evaluating anything useful.
    same = safeguarded_newton(_cubic, (c[:1], wild[:1]), np.ones(1), np.ones(1), np.ones(1))
    np.testing.assert_array_equal(same, [1.0])


def test_results_do_not_depend_on_the_batch():
    """Rows are solved independently: converged entries are frozen, not moved by others."""
    rng = np.random.default_rng(140)
    v = rng.standard_normal((60, 3)) * 10.0 ** rng.uniform(-8, 8, (60, 3))
    a = rng.uniform(0.05, 0.95, 60)
    scale = np.abs(v).max(axis=1, keepdims=True)
    for project, jacobian, args in [
        (project_exp, exp_projection_jacobian, lambda i: ()),
        (project_power, power_projection_jacobian, lambda i: (a if i is None else a[i],)),
    ]:
        rows = np.vstack([project(v[i : i + 1], *args(i)) for i in range(60)])
        np.testing.assert_allclose(project(v, *args(None)) / scale, rows / scale, atol=1e-15)
        jacs = np.concatenate([jacobian(v[i : i + 1], *args(i)) for i in range(60)])
        np.testing.assert_allclose(jacobian(v, *args(None)), jacs, rtol=0, atol=1e-14)


def test_power_jacobian_when_the_projected_z_underflows():
    """z0 tiny next to x0 > 0 > y0: DΠ tends to diag(1, 0, 0) for a < 1/2 (see z = 0)."""
    v = np.array([[1.38263499e200, -9.87296770e186, -2.25883926e-108]])
    jac = power_projection_jacobian(v, 0.4153748076019108)
    assert_valid_jacobian(jac)
    np.testing.assert_allclose(jac[0], np.diag([1.0, 0.0, 0.0]), atol=1e-12)
