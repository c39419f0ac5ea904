"""The derivative engine on random cone programs with a known solution, every cone.

A program is built around a chosen primal-dual solution: pick x0 and a generic
v, set y = Π_{K*}(v), s = Π_K(−v) (strictly complementary), then
b = A x0 + s and q = −P x0 − Aᵀ y. The JVP is checked against perturbing the
data and re-solving at tight tolerance, and the VJP against the JVP (adjoint).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from convexlayers.compile import SparsePattern
from convexlayers.cones import ConeDims, project_dual, project_primal
from convexlayers.derivative import DenseLU, SolutionDerivative, SparseLU
from convexlayers.solvers import get_solver

DIMS = {
    "zero_nonneg": ConeDims(zero=2, nonneg=5),
    "soc": ConeDims(nonneg=1, soc=(3, 4)),
    "psd": ConeDims(zero=1, psd=(3,)),
    "exp": ConeDims(nonneg=1, exp=3),
    "power": ConeDims(nonneg=1, power=(0.3, 0.7)),
    "all": ConeDims(zero=1, nonneg=2, soc=(3,), psd=(2,), exp=1, power=(0.4,)),
}


class _Structure:
    """Dense-pattern layout ``[P upper | q | A | b]`` for a program of given size."""

    def __init__(self, n, m, dims, quadratic):
        self.n, self.m, self.dims = n, m, dims
        iu = np.triu_indices(n)
        order = np.lexsort((iu[0], iu[1]))
        self.P = SparsePattern.from_positions(iu[0][order], iu[1][order], (n, n)) if quadratic \
            else None
        rows, cols = np.meshgrid(np.arange(m), np.arange(n), indexing="ij")
        self.A = SparsePattern.from_positions(rows.ravel("F"), cols.ravel("F"), (m, n))

    def split(self, data):
        sizes = [0 if self.P is None else self.P.nnz, self.n, self.A.nnz, self.m]
        return tuple(np.split(data, np.cumsum(sizes)[:-1], axis=-1))

    def program(self, data):
        from convexlayers.solvers import ConeProgram
        p, q, a, b = self.split(data)
        P = None if self.P is None else self.P.matrix(p)
        return ConeProgram(P=P, q=q, A=self.A.matrix(a), b=b, dims=self.dims)


def _instance(dims, quadratic, rng, batch=2):
    """n = m + 2 unknowns: even with every row active, the constraints stay independent."""
    m = dims.size
    n = m + 2
    st = _Structure(n, m, dims, quadratic)
    data, xs, ys, ss = [], [], [], []
    for _ in range(batch):
        A = rng.standard_normal((m, n))
        x0 = rng.standard_normal(n)
        v = rng.standard_normal((1, m))
        y, s = project_dual(dims, v)[0], project_primal(dims, -v)[0]
        F = rng.standard_normal((n, n))
        P = F @ F.T / n + 0.1 * np.eye(n) if quadratic else np.zeros((n, n))
        q = -P @ x0 - A.T @ y
        b = A @ x0 + s
        p_vals = P[st.P.rows, st.P.cols] if quadratic else np.zeros(0)
        data.append(np.concatenate([p_vals, q, A.ravel("F"), b]))
        xs.append(x0)
        ys.append(y)
        ss.append(s)
    return st, np.array(data), np.array(xs), np.array(ys), np.array(ss)


def _resolve(st, data):
    solver = get_solver("SCS")
    settings = solver.settings({"eps": 1e-12, "max_iters": 100_000})
    r = solver.solve(st.program(data), settings)
    assert r.status.has_solution
    return r.x, r.y, r.s


@pytest.mark.parametrize("name", list(DIMS))
def test_jvp_matches_perturb_and_resolve(name):
    """P ≻ 0 keeps the solution unique for every draw (an LP needs a chosen active set)."""
    rng = np.random.default_rng(list(DIMS).index(name))
    st, data, x, y, s = _instance(DIMS[name], True, rng, batch=1)
    # the constructed solution is the solver's solution
    x_ref, _, _ = _resolve(st, data[0])
    np.testing.assert_allclose(x_ref, x[0], atol=1e-7)
    d = rng.standard_normal(data.shape)
    dx, dy, ds = SolutionDerivative(st, data, x, y, s).jvp(d)
    h = 1e-5
    plus, minus = _resolve(st, data[0] + h * d[0]), _resolve(st, data[0] - h * d[0])
    for k, an in enumerate([dx, dy, ds]):
        fd = (plus[k] - minus[k]) / (2 * h)
        np.testing.assert_allclose(an[0], fd, rtol=1e-4, atol=1e-5 * (1 + np.abs(fd).max()))


@pytest.mark.parametrize("solver", [DenseLU(), SparseLU()], ids=["dense", "sparse"])
@pytest.mark.parametrize("name", list(DIMS))
def test_vjp_is_adjoint_of_jvp(name, solver):
    rng = np.random.default_rng(100 + list(DIMS).index(name))
    st, data, x, y, s = _instance(DIMS[name], True, rng, batch=3)
    deriv = SolutionDerivative(st, data, x, y, s, linear_solver=solver)
    d = rng.standard_normal(data.shape)
    gx, gy, gs = rng.standard_normal(x.shape), rng.standard_normal(y.shape), \
        rng.standard_normal(s.shape)
    dx, dy, ds = deriv.jvp(d)
    lhs = (gx * dx).sum(1) + (gy * dy).sum(1) + (gs * ds).sum(1)
    rhs = (deriv.vjp(gx, gy, gs) * d).sum(1)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-10, atol=1e-10)
    assert set(deriv.report.method) == {"lu" if isinstance(solver, DenseLU) else "sparse_lu"}
    assert (deriv.report.residual < 1e-10).all()


def test_lp_with_unique_vertex_matches_resolve():
    """P = 0: an LP whose solution is a nondegenerate vertex (n active rows)."""
    rng = np.random.default_rng(3)
    n, dims = 3, ConeDims(zero=1, nonneg=4)
    st = _Structure(n, dims.size, dims, quadratic=False)
    A = rng.standard_normal((dims.size, n))
    x0 = rng.standard_normal(n)
    y = np.array([0.7, 1.0, 0.5, 0.0, 0.0])  # equality + 2 active inequalities = n
    s = np.array([0.0, 0.0, 0.0, 0.8, 1.3])
    data = np.concatenate([-A.T @ y, A.ravel("F"), A @ x0 + s])[None]
    d = rng.standard_normal(data.shape)
    dx, dy, ds = SolutionDerivative(st, data, x0[None], y[None], s[None]).jvp(d)
    h = 1e-5
    plus, minus = _resolve(st, data[0] + h * d[0]), _resolve(st, data[0] - h * d[0])
    for k, an in enumerate([dx, dy, ds]):
        np.testing.assert_allclose(an[0], (plus[k] - minus[k]) / (2 * h), rtol=1e-5, atol=1e-6)


def test_dense_and_sparse_agree():
    rng = np.random.default_rng(7)
    st, data, x, y, s = _instance(DIMS["all"], True, rng, batch=2)
    g = [rng.standard_normal(a.shape) for a in (x, y, s)]
    dense = SolutionDerivative(st, data, x, y, s, linear_solver=DenseLU()).vjp(*g)
    sparse = SolutionDerivative(st, data, x, y, s, linear_solver=SparseLU()).vjp(*g)
    np.testing.assert_allclose(dense, sparse, rtol=1e-9, atol=1e-11)


def test_factors_of_a_far_point_are_dropped_without_overflow():
    """Factors of another point's J (as polishing and the backward pass on): where
    refinement against this J diverges it stops before its iterates overflow (numpy
    warnings are errors here), and this J is factored afresh; the answer is this J's."""
    rng = np.random.default_rng(11)
    st, data, x, y, s = _instance(DIMS["all"], True, rng, batch=3)
    far = SolutionDerivative(st, 1e-6 * rng.standard_normal(data.shape), x, y, s)
    g = [rng.standard_normal(a.shape) for a in (x, y, s)]
    far.vjp(*g)
    reused = SolutionDerivative(st, data, x, y, s, factors=far.store).vjp(*g)
    fresh = SolutionDerivative(st, data, x, y, s).vjp(*g)
    np.testing.assert_allclose(reused, fresh, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("solver", [DenseLU(), SparseLU()], ids=["dense", "sparse"])
def test_singular_system_falls_back_to_least_squares(solver):
    """An LP whose solution is not unique: J is singular; the residual is reported."""
    dims = ConeDims(nonneg=2)
    st = _Structure(2, 2, dims, quadratic=False)
    # min x0 s.t. x0 >= 0, x0 >= 0 (duplicate constraint, x1 free): J singular
    A = np.array([[-1.0, 0.0], [-1.0, 0.0]])
    data = np.concatenate([[1.0, 0.0], A.ravel("F"), [0.0, 0.0]])[None]
    x = np.array([[0.0, 0.0]])
    y = np.array([[0.5, 0.5]])
    deriv = SolutionDerivative(st, data, x, y, np.zeros((1, 2)), linear_solver=solver)
    out = deriv.vjp(np.ones((1, 2)), np.zeros((1, 2)), np.zeros((1, 2)))
    assert np.isfinite(out).all()
    assert deriv.report.method == ("lstsq",)
    assert deriv.report.residual[0] > 1e-3  # inconsistent: x1 is undetermined


def test_least_squares_by_svd_and_by_lsmr_agree(monkeypatch):
    """The last resort takes a dense SVD up to DENSE_LSTSQ unknowns and LSMR beyond:
    both give the minimum-norm least-squares solution of a singular J."""
    from convexlayers.derivative import _linear

    dims = ConeDims(nonneg=3)
    st = _Structure(3, 3, dims, quadratic=False)
    A = np.array([[-1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 1.0]])
    data = np.concatenate([[1.0, 0.0, 0.0], A.ravel("F"), [0.0, 0.0, 1.0]])
    data = np.stack([data, 2.0 * data])  # both elements' J, in reverse order
    deriv = SolutionDerivative(st, data, np.zeros((2, 3)), np.tile([0.5, 0.5, 0.0], (2, 1)),
                               np.tile([0.0, 0.0, 1.0], (2, 1)), linear_solver=SparseLU())
    rhs = np.random.default_rng(0).standard_normal((2, 6, 2))
    idx = np.array([1, 0])
    for transpose in (False, True):
        svd = _linear.least_squares(deriv.J, rhs, transpose, idx)
        monkeypatch.setattr(_linear, "DENSE_LSTSQ", 0)
        lsmr = _linear.least_squares(deriv.J, rhs, transpose, idx)
        monkeypatch.undo()
        np.testing.assert_allclose(svd, lsmr, atol=1e-8)
        for k, b in enumerate(idx):
            M = deriv.J.dense_matrices()[b]
            M = M.T if transpose else M
            np.testing.assert_allclose(svd[k], np.linalg.pinv(M) @ rhs[b], atol=1e-10)
            assert np.linalg.matrix_rank(M) < M.shape[0]  # singular


def test_sparse_pattern_roundtrip():
    rows, cols = np.array([0, 2, 1]), np.array([0, 0, 2])
    pat = SparsePattern.from_positions(rows, cols, (3, 3))
    M = pat.matrix(np.array([1.0, 2.0, 3.0]))
    assert isinstance(M, sp.csc_array)
    np.testing.assert_array_equal(M.toarray(), [[1, 0, 0], [0, 0, 3], [2, 0, 0]])
    np.testing.assert_array_equal(pat.cols, cols)
