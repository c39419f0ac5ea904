"""Tests of convexlayers.cones: svec, SOC and PSD projections, the product cone.

The exponential and power cones are tested in test_cones_exp_power.py.
Every Jacobian is checked against central finite differences with step
sqrt(eps) * ||v|| (the projections are positively homogeneous, so that is the
natural scale), at points kept away from the region boundaries by more than the
step, where the projection is smooth.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from convexlayers.cones import (
    ConeDims,
    ConeJacobian,
    dual_projection_jacobian,
    project_dual,
    project_primal,
    project_psd,
    project_soc,
    psd_projection_jacobian,
    smat,
    soc_projection_jacobian,
    svec,
    svec_size,
)

SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))


def fd_jacobian(fun, v: np.ndarray) -> np.ndarray:
    """Central differences of a row-wise map fun: (N, k) -> (N, k); returns (N, k, k)."""
    n, k = v.shape
    step = SQRT_EPS * np.maximum(np.linalg.norm(v, axis=1), 1e-300)
    jac = np.empty((n, k, k))
    for j in range(k):
        e = np.zeros_like(v)
        e[:, j] = step
        jac[:, :, j] = (fun(v + e) - fun(v - e)) / (2.0 * step[:, None])
    return jac


def assert_valid_jacobian(jac: np.ndarray, tol: float = 1e-12) -> None:
    """Finite, symmetric, eigenvalues in [0, 1]."""
    assert np.all(np.isfinite(jac))
    np.testing.assert_allclose(jac, np.swapaxes(jac, -1, -2), atol=tol)
    eig = np.linalg.eigvalsh(jac)
    assert eig.min() >= -tol and eig.max() <= 1 + tol


def assert_below(err: np.ndarray, bound) -> None:
    """err <= bound elementwise (with broadcasting), reporting the worst ratio."""
    err, bound = np.broadcast_arrays(err, bound)
    ok = err <= bound
    assert np.all(ok), f"worst err/bound = {np.max(err[~ok] / bound[~ok]):.3g}"


def scaled_normal(rng, shape, lo=-6.0, hi=6.0) -> np.ndarray:
    """Gaussian rows with a random overall scale 10**U(lo, hi) per row."""
    v = rng.standard_normal(shape)
    return v * 10.0 ** rng.uniform(lo, hi, (shape[0], 1))


# --------------------------------------------------------------------- svec


def test_svec_order_and_scaling():
    x = np.array([[1.0, 2.0, 4.0], [2.0, 3.0, 5.0], [4.0, 5.0, 6.0]])
    r2 = np.sqrt(2.0)
    np.testing.assert_allclose(svec(x), [1.0, 2 * r2, 3.0, 4 * r2, 5 * r2, 6.0])
    np.testing.assert_allclose(smat(svec(x)), x)


def test_svec_is_isometry_and_batched():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 2, 5, 5))
    b = rng.standard_normal((4, 2, 5, 5))
    a, b = a + np.swapaxes(a, -1, -2), b + np.swapaxes(b, -1, -2)
    inner = np.einsum("...i,...i->...", svec(a), svec(b))
    np.testing.assert_allclose(inner, np.einsum("...ij,...ji->...", a, b))
    assert svec(a).shape == (4, 2, svec_size(5))
    np.testing.assert_allclose(smat(svec(a)), a)
    np.testing.assert_allclose(smat(svec(a), 5), a)


def test_svec_smat_errors():
    with pytest.raises(ValueError, match=r"\(\.\.\., k, k\)"):
        svec(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="k\\(k\\+1\\)/2"):
        smat(np.zeros(4))
    with pytest.raises(ValueError, match="6 entries for k=3"):
        smat(np.zeros(5), 3)


# ---------------------------------------------------------------------- SOC


def soc_points(rng, n: int, k: int) -> np.ndarray:
    """Points in the three SOC regions, some within 1e-4 (relative) of a boundary."""
    z = rng.standard_normal((n, k - 1))
    r = np.linalg.norm(z, axis=1)
    ratio = np.concatenate(
        [
            rng.uniform(-3, 3, n - 4 * (n // 6)),
            1 + 1e-4 * rng.choice([-1, 1], n // 6),  # near ||z|| = t
            -1 + 1e-4 * rng.choice([-1, 1], n // 6),  # near ||z|| = -t
            rng.uniform(-1e-3, 1e-3, n // 6),  # t ≈ 0
            rng.choice([-1, 1], n // 6) * rng.uniform(50, 100, n // 6),  # deep inside K or -K
        ]
    )
    t = ratio * r
    return np.column_stack([t, z]) * 10.0 ** rng.uniform(-6, 6, (n, 1))


def soc_member(p: np.ndarray, tol: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p[:, 1:], axis=1) <= p[:, 0] + tol


@pytest.mark.parametrize("k", [2, 3, 6])
def test_soc_projection_optimality_and_moreau(k):
    rng = np.random.default_rng(k)
    v = soc_points(rng, 600, k)
    p = project_soc(v)
    tol = 1e-12 * np.linalg.norm(v, axis=1)
    d = v - p  # in the polar cone -K, i.e. -d in K
    assert np.all(soc_member(p, tol)) and np.all(soc_member(-d, tol))
    assert np.all(np.abs(np.sum(p * d, axis=1)) <= tol * np.linalg.norm(v, axis=1))
    # Moreau: v = Π_K(v) - Π_K*(-v), K self-dual.
    err = np.abs(p - project_soc(-v) - v)
    assert np.all(err <= 1e-13 * np.linalg.norm(v, axis=1)[:, None])
    np.testing.assert_allclose(project_soc(p), p, rtol=0, atol=1e-13 * np.abs(v).max())


def test_soc_dimension_one_is_nonnegative_ray():
    v = np.array([[-2.0], [0.0], [3.0]])
    np.testing.assert_array_equal(project_soc(v), [[0.0], [0.0], [3.0]])
    np.testing.assert_array_equal(soc_projection_jacobian(v)[:, 0, 0], [0.0, 0.0, 1.0])


def test_soc_known_values():
    np.testing.assert_allclose(project_soc(np.array([[0.0, 2.0, 0.0]])), [[1.0, 1.0, 0.0]])
    np.testing.assert_allclose(project_soc(np.array([[5.0, 3.0, 4.0]])), [[5.0, 3.0, 4.0]])
    np.testing.assert_allclose(project_soc(np.array([[-5.0, 3.0, 4.0]])), [[0.0, 0.0, 0.0]])


@pytest.mark.parametrize("k", [2, 3, 6])
def test_soc_jacobian_matches_finite_differences(k):
    rng = np.random.default_rng(10 + k)
    v = soc_points(rng, 600, k)
    jac = soc_projection_jacobian(v)
    assert_valid_jacobian(jac)
    np.testing.assert_allclose(jac, fd_jacobian(project_soc, v), atol=1e-6)


# ---------------------------------------------------------------------- PSD


def psd_points(rng, n: int, k: int) -> np.ndarray:
    """svec of symmetric matrices with eigenvalues of both signs, some repeated or tiny."""
    q, _ = np.linalg.qr(rng.standard_normal((n, k, k)))
    lam = rng.standard_normal((n, k)) * 10.0 ** rng.uniform(-6, 6, (n, 1))
    lam[: n // 4, 1:] = lam[: n // 4, :1]  # a repeated eigenvalue
    third = slice(n // 4, n // 2)
    lam[third, 0] = 1e-4 * np.abs(lam[third]).max(axis=1)  # a small eigenvalue near 0
    x = (q * lam[:, None, :]) @ np.swapaxes(q, 1, 2)
    return svec(x)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_psd_projection_optimality_and_moreau(k):
    rng = np.random.default_rng(20 + k)
    v = psd_points(rng, 300, k)
    p = project_psd(v, k)
    d = v - p
    scale = np.abs(v).max(axis=1)
    assert np.all(np.linalg.eigvalsh(smat(p, k)).min(axis=1) >= -1e-13 * scale)
    assert np.all(np.linalg.eigvalsh(smat(d, k)).max(axis=1) <= 1e-13 * scale)
    assert np.all(np.abs(np.sum(p * d, axis=1)) <= 1e-12 * scale**2)
    assert_below(np.abs(p - project_psd(-v, k) - v), 1e-12 * scale[:, None])
    assert_below(np.abs(project_psd(p, k) - p), 1e-12 * scale[:, None])


def test_psd_order_one_is_nonnegative():
    v = np.array([[-1.0], [2.0]])
    np.testing.assert_array_equal(project_psd(v, 1), [[0.0], [2.0]])
    np.testing.assert_array_equal(psd_projection_jacobian(v, 1)[:, 0, 0], [0.0, 1.0])


@pytest.mark.parametrize("k", [2, 3, 5])
def test_psd_jacobian_matches_finite_differences(k):
    rng = np.random.default_rng(30 + k)
    v = psd_points(rng, 200, k)
    jac = psd_projection_jacobian(v, k)
    assert jac.shape == (200, svec_size(k), svec_size(k))
    assert_valid_jacobian(jac)
    fd = fd_jacobian(lambda w: project_psd(w, k), v)
    np.testing.assert_allclose(jac, fd, atol=1e-6)


def test_psd_jacobian_special_points():
    k = 3
    eye = svec(np.eye(k))[None]
    np.testing.assert_allclose(psd_projection_jacobian(eye, k)[0], np.eye(6), atol=1e-14)
    np.testing.assert_allclose(psd_projection_jacobian(-eye, k)[0], 0.0, atol=1e-14)
    np.testing.assert_allclose(psd_projection_jacobian(0 * eye, k)[0], 0.0)
    # diag(1, -1, 0): Γ(1, -1) = 1/2, Γ(1, 0) = 1, the rest 0.
    jac = psd_projection_jacobian(svec(np.diag([1.0, -1.0, 0.0]))[None], k)[0]
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(jac)), [0, 0, 0, 0.5, 1, 1], atol=1e-14)


# ----------------------------------------------------------- product cone

ALL_DIMS = ConeDims(zero=2, nonneg=3, soc=(3, 3, 1, 4), psd=(2, 3, 3), exp=2, power=(0.3, 0.5, 0.8))


def product_point(rng, dims: ConeDims, batch: int) -> np.ndarray:
    """Random batch with every kind of cone away from its region boundaries."""
    v = rng.standard_normal((batch, dims.size))
    # Keep the nonnegative rows away from 0, where Π is not differentiable.
    nn = slice(dims.zero, dims.zero + dims.nonneg)
    v[:, nn] += np.sign(v[:, nn]) * 0.1
    return v * 10.0 ** rng.uniform(-3, 3, (batch, 1))


def moreau_check(dims, v):
    """v = Π_K(v) - Π_K*(-v) and the two parts are orthogonal."""
    p = project_primal(dims, v)
    q = project_dual(dims, -v)
    scale = np.abs(v).max(axis=1, initial=1e-300)
    assert_below(np.abs(p - q - v), 1e-12 * scale[:, None])
    assert np.all(np.abs(np.sum(p * q, axis=1)) <= 1e-12 * scale**2)


def test_product_projection_blocks_and_moreau():
    rng = np.random.default_rng(40)
    dims = ALL_DIMS
    v = product_point(rng, dims, 5)
    p, y = project_primal(dims, v), project_dual(dims, v)
    z = dims.zero
    np.testing.assert_array_equal(p[:, :z], 0.0)  # zero cone
    np.testing.assert_array_equal(y[:, :z], v[:, :z])  # free cone
    nn = slice(z, z + dims.nonneg)
    np.testing.assert_array_equal(p[:, nn], np.maximum(v[:, nn], 0))
    soc = slice(dims.soc_start, dims.soc_start + 3)
    np.testing.assert_array_equal(p[:, soc], project_soc(v[:, soc]))
    np.testing.assert_array_equal(y[:, soc], p[:, soc])
    moreau_check(dims, v)
    scale = np.abs(v).max(axis=1, keepdims=True)
    assert np.all(np.abs(project_primal(dims, p) - p) <= 1e-12 * scale)
    assert np.all(np.abs(project_dual(dims, y) - y) <= 1e-12 * scale)


def test_product_dual_jacobian_matches_finite_differences():
    rng = np.random.default_rng(41)
    dims, batch = ALL_DIMS, 3
    v = product_point(rng, dims, batch)
    jac = dual_projection_jacobian(dims, v)
    assert isinstance(jac, ConeJacobian)
    assert jac.batch == batch and jac.dims == dims
    dense = jac.dense()
    assert dense.shape == (batch, dims.size, dims.size)
    assert_valid_jacobian(dense)
    step = SQRT_EPS * np.linalg.norm(v, axis=1)
    fd = np.empty_like(dense)
    for j in range(dims.size):
        e = np.zeros_like(v)
        e[:, j] = step
        diff = project_dual(dims, v + e) - project_dual(dims, v - e)
        fd[:, :, j] = diff / (2 * step[:, None])
    np.testing.assert_allclose(dense, fd, atol=1e-6)


def test_cone_jacobian_layout_and_consistency():
    rng = np.random.default_rng(42)
    dims, batch = ALL_DIMS, 3
    v = product_point(rng, dims, batch)
    jac = dual_projection_jacobian(dims, v)
    lin = dims.zero + dims.nonneg
    np.testing.assert_array_equal(jac.diag[:, : dims.zero], 1.0)
    np.testing.assert_array_equal(jac.diag[:, dims.zero : lin], v[:, dims.zero : lin] > 0)
    np.testing.assert_array_equal(jac.diag[:, lin:], 0.0)
    sizes = [*dims.soc, *(svec_size(k) for k in dims.psd), *[3] * dims.exp, *[3] * 3]
    offsets = lin + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    assert [o for o, _ in jac.blocks] == offsets.tolist()
    assert [b.shape for _, b in jac.blocks] == [(batch, k, k) for k in sizes]
    dense = jac.dense()
    for offset, block in jac.blocks:
        k = block.shape[-1]
        np.testing.assert_array_equal(dense[:, offset : offset + k, offset : offset + k], block)
    z = rng.standard_normal((batch, dims.size))
    np.testing.assert_allclose(jac.matvec(z), np.einsum("bij,bj->bi", dense, z), atol=1e-14)
    zz = rng.standard_normal((batch, dims.size, 4))
    np.testing.assert_allclose(jac.matvec(zz), dense @ zz, atol=1e-14)
    for i in range(batch):
        s = jac.sparse(i)
        assert isinstance(s, sp.csr_array) and s.shape == (dims.size, dims.size)
        np.testing.assert_array_equal(s.toarray(), dense[i])
    # the sparsity structure does not depend on the batch element
    assert all(np.array_equal(jac.sparse(i).indices, jac.sparse(0).indices) for i in range(batch))
    np.testing.assert_array_equal(jac.sparse(-1).toarray(), dense[-1])
    with pytest.raises(IndexError, match="out of range"):
        jac.sparse(batch)


def test_cone_jacobian_built_from_blocks_only():
    rng = np.random.default_rng(43)
    dims = ConeDims(nonneg=2, soc=(3, 3), exp=1)
    v = product_point(rng, dims, 2)
    ref = dual_projection_jacobian(dims, v)
    mine = ConeJacobian(dims, 2, ref.diag.copy(), ref.blocks)
    z = rng.standard_normal((2, dims.size))
    np.testing.assert_allclose(mine.matvec(z), ref.matvec(z))
    np.testing.assert_array_equal(mine.dense(), ref.dense())
    np.testing.assert_array_equal(mine.sparse(1).toarray(), ref.sparse(1).toarray())
    with pytest.raises(ValueError, match="diag"):
        ConeJacobian(dims, 3, ref.diag, ref.blocks)
    with pytest.raises(ValueError, match="offset"):
        ConeJacobian(dims, 2, ref.diag, ((dims.size - 1, ref.blocks[0][1]),))


def test_grouped_cones_match_single_cone_calls():
    rng = np.random.default_rng(44)
    dims = ConeDims(soc=(2, 2, 2, 5), psd=(2, 2))
    v = product_point(rng, dims, 4)
    jac = dual_projection_jacobian(dims, v)
    for offset, block in jac.blocks:
        k = block.shape[-1]
        seg = v[:, offset : offset + k]
        if offset < dims.psd_start:
            np.testing.assert_array_equal(block, soc_projection_jacobian(seg))
        else:
            np.testing.assert_array_equal(block, psd_projection_jacobian(seg, 2))


def test_batch_rows_are_independent():
    rng = np.random.default_rng(45)
    dims = ALL_DIMS
    v = product_point(rng, dims, 4)
    full = project_dual(dims, v)
    dense = dual_projection_jacobian(dims, v).dense()
    for i in range(4):
        # equal up to rounding: batched BLAS/LAPACK calls may sum in another order
        one = project_dual(dims, v[i : i + 1])[0]
        np.testing.assert_allclose(one, full[i], rtol=1e-13, atol=1e-13 * np.abs(v[i]).max())
        one_jac = dual_projection_jacobian(dims, v[i : i + 1]).dense()[0]
        np.testing.assert_allclose(one_jac, dense[i], rtol=0, atol=1e-12)


def test_non_finite_batch_rows_give_nan_only_there():
    rng = np.random.default_rng(46)
    dims = ALL_DIMS
    v = product_point(rng, dims, 3)
    v[1, 0] = np.nan
    v[2, -1] = np.inf
    y = project_dual(dims, v)
    assert np.all(np.isnan(y[1:])) and np.all(np.isfinite(y[0]))
    assert np.all(np.isnan(project_primal(dims, v)[1:]))
    dense = dual_projection_jacobian(dims, v).dense()
    assert np.all(np.isfinite(dense[0]))
    assert np.all(np.isnan(dense[1:][:, np.arange(dims.size), np.arange(dims.size)]))


@pytest.mark.parametrize(
    ("dims", "batch"),
    [(ConeDims(), 3), (ConeDims(), 0), (ALL_DIMS, 0), (ConeDims(zero=2), 2)],
)
def test_empty_edge_cases(dims, batch):
    m = dims.size
    v = np.zeros((batch, m))
    assert project_primal(dims, v).shape == (batch, m)
    assert project_dual(dims, v).shape == (batch, m)
    jac = dual_projection_jacobian(dims, v)
    assert jac.diag.shape == (batch, m)
    assert jac.dense().shape == (batch, m, m)
    assert jac.matvec(v).shape == (batch, m)
    if batch:
        assert jac.sparse(0).shape == (m, m)
    else:
        with pytest.raises(IndexError):
            jac.sparse(0)


def test_product_input_validation():
    dims = ConeDims(nonneg=2, exp=1)
    with pytest.raises(ValueError, match=r"shape \(batch, 5\)"):
        project_dual(dims, np.zeros(5))
    with pytest.raises(ValueError, match=r"shape \(batch, 5\)"):
        dual_projection_jacobian(dims, np.zeros((2, 4)))
    jac = dual_projection_jacobian(dims, np.ones((2, 5)))
    with pytest.raises(ValueError, match="`z` must have shape"):
        jac.matvec(np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"shape \(N, k\)"):
        project_soc(np.zeros(3))


def test_inputs_not_mutated_and_outputs_read_only():
    rng = np.random.default_rng(47)
    dims = ALL_DIMS
    v = product_point(rng, dims, 2)
    before = v.copy()
    project_primal(dims, v)
    project_dual(dims, v)
    jac = dual_projection_jacobian(dims, v)
    np.testing.assert_array_equal(v, before)
    assert not jac.diag.flags.writeable
    assert not jac.blocks[0][1].flags.writeable


def test_zero_vector_conventions():
    """At v = 0 the dual Jacobian is 0 on nonnegative/SOC/PSD rows and 1 on zero-cone rows."""
    dims = ConeDims(zero=1, nonneg=1, soc=(3,), psd=(2,))
    jac = dual_projection_jacobian(dims, np.zeros((1, dims.size))).dense()[0]
    np.testing.assert_array_equal(np.diag(jac), [1.0] + [0.0] * (dims.size - 1))
