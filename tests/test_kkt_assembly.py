"""J = [[P, Aᵀ D], [A, D − I]] assembled for a batch equals the dense formula.

The Aᵀ D entries of a cone block are made either by one product per (nonzero of A,
entry of the block) or by batched matrix products over the cones of a run
(:mod:`convexlayers.derivative._kkt_blocks`); the structures here send runs down both
ways: a small second-order cone met by dense columns and a PSD cone (products), a run of
exponential cones with more distinct column counts than the products take (per-product
form), a run of power cones split into several groups; and large second-order cones,
outside, inside and on the polar, which J keeps sparse with one new unknown each
(:mod:`convexlayers.derivative._kkt_lift`): for them J̃'s Schur complement is compared.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from convexlayers.cones import ConeDims, dual_projection_jacobian
from convexlayers.derivative._kkt import dense, kkt_pattern, kkt_values
from convexlayers.derivative._kkt_lift import LIFT_MIN


@dataclass(frozen=True, eq=False)
class _Pattern:
    rows: np.ndarray
    cols: np.ndarray


@dataclass(frozen=True, eq=False)
class _Structure:
    n: int
    m: int
    dims: ConeDims
    P: _Pattern | None
    A: _Pattern


def _random_a(rng, n: int, dims: ConeDims) -> np.ndarray:
    """A 0/1 mask (m, n): each cone block gets its own column pattern."""
    rows = [rng.random((dims.zero + dims.nonneg, n)) < 0.3]
    for k in dims.soc:
        if k > 45 or k == 11:  # dense columns
            rows.append(np.ones((k, n), dtype=bool))
        else:  # one entry per column: the per-product form
            cols = rng.choice(n, k, replace=False)
            block = np.zeros((k, n), dtype=bool)
            block[np.arange(k), cols] = True
            rows.append(block)
    for k in dims.psd:
        rows.append(rng.random((k * (k + 1) // 2, n)) < 0.5)
    for i in range(dims.exp):  # cone i meets i + 1 columns: many distinct counts
        block = np.zeros((3, n), dtype=bool)
        block[:, rng.choice(n, min(i + 1, n), replace=False)] = True
        rows.append(block)
    for i in range(len(dims.power)):  # two distinct counts
        block = np.zeros((3, n), dtype=bool)
        block[:, rng.choice(n, 2 + i % 2, replace=False)] = True
        rows.append(block)
    return np.vstack(rows)


def _case(rng, dims: ConeDims, n: int, batch: int, with_p: bool):
    mask = _random_a(rng, n, dims)
    ar, ac = np.nonzero(mask)
    A = _Pattern(ar, ac)
    P = None
    if with_p:
        pr, pc = np.triu_indices(n)
        keep = rng.random(pr.size) < 0.4
        keep[pr == pc] = True
        P = _Pattern(pr[keep], pc[keep])
    st = _Structure(n, mask.shape[0], dims, P, A)
    a_vals = rng.standard_normal((batch, ar.size))
    p_vals = None if P is None else rng.standard_normal((batch, P.rows.size))
    v = rng.standard_normal((batch, st.m))
    # Second-order cones: element 0 outside the cone and its polar, 1 inside, 2 polar.
    start = dims.zero + dims.nonneg
    for k in dims.soc:
        v[1:, start] = np.where(np.arange(1, batch) % 2, 1.0, -1.0) * 10.0 * np.sqrt(k)
        start += k
    D = dual_projection_jacobian(dims, v, low_rank_from=LIFT_MIN)
    return st, p_vals, a_vals, D


def _reference(st, p_vals, a_vals, D, b: int) -> np.ndarray:
    A = np.zeros((st.m, st.n))
    A[st.A.rows, st.A.cols] = a_vals[b]
    P = np.zeros((st.n, st.n))
    if st.P is not None:
        P[st.P.rows, st.P.cols] = p_vals[b]
        P[st.P.cols, st.P.rows] = p_vals[b]
    Db = D.sparse(b).toarray()
    return np.block([[P, A.T @ Db], [A, Db - np.eye(st.m)]])


CASES = {
    "big SOC, dense columns": ConeDims(zero=2, nonneg=5, soc=(51,)),
    "big SOC, single entries": ConeDims(nonneg=3, soc=(40, 3, 3)),
    "small SOC, dense columns": ConeDims(nonneg=3, soc=(11,)),
    "PSD": ConeDims(zero=1, psd=(3, 3, 4)),
    "exponential, many column counts": ConeDims(nonneg=2, exp=40),
    "power, two groups": ConeDims(power=(0.3, 0.5, 0.7, 0.2)),
    "all together": ConeDims(zero=3, nonneg=4, soc=(51, 5, 5), psd=(3,), exp=3,
                             power=(0.4,)),
}


@pytest.mark.parametrize("with_p", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_assembled_j_equals_the_dense_formula(name, with_p):
    rng = np.random.default_rng(len(name))
    st, p_vals, a_vals, D = _case(rng, CASES[name], n=50, batch=3, with_p=with_p)
    pattern = kkt_pattern(st, D)
    lifted = dense(pattern, kkt_values(pattern, p_vals, a_vals, D))
    N = st.n + st.m
    extra = sum(1 for k in CASES[name].soc if k >= LIFT_MIN)
    assert lifted.shape[1] == N + extra
    for b in range(3):
        # Lifted cones: J is the Schur complement of J̃ on the new unknowns (−I there).
        Jt = lifted[b]
        np.testing.assert_array_equal(Jt[N:, N:], -np.eye(extra))
        J = Jt[:N, :N] + Jt[:N, N:] @ Jt[N:, :N]
        np.testing.assert_allclose(J, _reference(st, p_vals, a_vals, D, b),
                                   rtol=1e-12, atol=1e-12)


def test_each_way_is_taken():
    """The cases above send runs down every way (else the test above proves less)."""
    rng = np.random.default_rng(0)

    def ways(dims: ConeDims) -> tuple[int, int]:
        st, _, _, D = _case(rng, dims, n=50, batch=1, with_p=False)
        pattern = kkt_pattern(st, D)
        return len(pattern.blocks), len(pattern.lifted)

    assert ways(CASES["big SOC, dense columns"]) == (0, 1)
    assert ways(CASES["small SOC, dense columns"]) == (1, 0)
    assert ways(CASES["big SOC, single entries"]) == (1, 1)  # the two 3-cones: products
    assert ways(CASES["exponential, many column counts"]) == (0, 0)
    assert ways(CASES["power, two groups"]) == (2, 0)
    assert ways(CASES["PSD"])[0] >= 1
    assert ways(CASES["all together"])[1] == 1


def _ball_layer(n: int, solver: str):
    import cvxpy as cp

    from convexlayers.torch import CvxpyLayer

    x, p = cp.Variable(n), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x - p)), [cp.norm(x) <= 1, x >= -0.2])
    return CvxpyLayer(prob, parameters=[p], variables=[x], solver=solver)


def _epigraph_layer(n: int, k: int, solver: str):
    import cvxpy as cp

    from convexlayers.torch import CvxpyLayer

    x, t = cp.Variable(n), cp.Variable()
    q, F = cp.Parameter(n), cp.Parameter((k, n))
    obj = q @ x + t + 0.5 * cp.sum_squares(x)
    prob = cp.Problem(cp.Minimize(obj), [cp.norm(F @ x) <= t, cp.sum(x) == 1])
    return CvxpyLayer(prob, parameters=[q, F], variables=[x, t], solver=solver)


@pytest.mark.parametrize("solver", ["CLARABEL", "NATIVE"])
def test_gradients_through_large_second_order_cones(solver):
    """gradcheck at its defaults through lifted cones: a 31-row ball constraint, active
    in one element and inactive in the other (its row 0 is constant), and a 21-row
    epigraph of ‖F x‖ (row 0 holds t)."""
    import torch

    rng = np.random.default_rng(3)
    ball = _ball_layer(30, solver)
    p = torch.tensor(np.stack([rng.standard_normal(30), 0.02 * rng.standard_normal(30)]),
                     requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda p: ball(p)[0], (p,))
    epi = _epigraph_layer(12, 20, solver)
    q = torch.tensor(rng.standard_normal((2, 12)), requires_grad=True)
    F = torch.tensor(0.3 * rng.standard_normal((2, 20, 12)), requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, F: epi(q, F), (q, F))


def test_factored_second_order_cones_act_like_the_dense_blocks():
    """D with its large second-order cones in factored form: the same matrix (dense,
    per-element sparse) and the same products, in all three regions of the cone."""
    rng = np.random.default_rng(7)
    dims = CASES["all together"]
    v = rng.standard_normal((3, dims.size))
    v[1, dims.zero + dims.nonneg] = 100.0  # element 1 inside the 51-row cone
    v[2, dims.zero + dims.nonneg] = -100.0  # element 2 on its polar
    dense_D = dual_projection_jacobian(dims, v)
    factored = dual_projection_jacobian(dims, v, low_rank_from=LIFT_MIN)
    assert len(factored.low_rank) == 1 and len(factored.stacks) == len(dense_D.stacks) - 1
    np.testing.assert_allclose(factored.dense(), dense_D.dense(), rtol=0, atol=1e-15)
    for i in (0, 2, -1):
        np.testing.assert_allclose(factored.sparse(i).toarray(), dense_D.sparse(i).toarray(),
                                   rtol=0, atol=1e-15)
    for z in (rng.standard_normal((3, dims.size)), rng.standard_normal((3, dims.size, 4))):
        np.testing.assert_allclose(factored.matvec(z), dense_D.matvec(z), rtol=1e-13,
                                   atol=1e-13)


@pytest.mark.parametrize("seed", range(4))
def test_lifted_and_dense_blocks_give_the_same_gradients(seed, monkeypatch):
    """Random SOCPs with 21- to 41-row cones (a norm objective and a norm-ball constraint,
    active or not): gradients through the lifted J equal those through D's dense blocks."""
    import cvxpy as cp
    import torch

    from convexlayers.derivative import _engine
    from convexlayers.torch import CvxpyLayer

    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(20, 31)), int(rng.integers(20, 41))
    x = cp.Variable(n)
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    radius = float(rng.choice([0.3, 10.0]))  # the ball active, or not
    obj = cp.norm(A @ x - b) + 0.1 * cp.norm1(x) + 0.05 * cp.sum_squares(x)
    prob = cp.Problem(cp.Minimize(obj), [cp.norm(x - c) <= radius])
    vals = [rng.standard_normal((3, m, n)), rng.standard_normal((3, m)),
            rng.standard_normal((3, n))]

    def grads():
        layer = CvxpyLayer(prob, parameters=[A, b, c], variables=[x])
        ts = [torch.tensor(v, requires_grad=True) for v in vals]
        (out,) = layer(*ts)
        (out * torch.tensor(np.cos(np.arange(n)))).sum().backward()
        return out.detach().numpy(), [t.grad.numpy() for t in ts]

    x_lift, g_lift = grads()
    monkeypatch.setattr(_engine, "LIFT_MIN", 10**9)
    x_dense, g_dense = grads()
    np.testing.assert_allclose(x_lift, x_dense, rtol=0, atol=1e-9)
    for gl, gd in zip(g_lift, g_dense, strict=True):
        np.testing.assert_allclose(gl, gd, rtol=1e-6, atol=1e-8)


def test_a_malformed_factored_run_is_refused():
    """A low_rank run whose parts do not fit the batch, each other or the rows: a
    ValueError naming what was received."""
    from convexlayers.cones import ConeJacobian

    dims = ConeDims(soc=(20,))
    good = dual_projection_jacobian(dims, np.ones((2, 20)), low_rank_from=LIFT_MIN)
    (offset, (d, h, w, g)), = good.low_rank
    for bad in [(d[:1], h[:1], w[:1], g[:1]), (d, h, w[..., :3], g), (d, h, w, g[:, :, None]),
                (d, h, w)]:
        with pytest.raises(ValueError, match="low_rank run"):
            ConeJacobian(dims, 2, good.diag, (), (), ((offset, bad),))
    with pytest.raises(ValueError, match="offset 5"):
        ConeJacobian(dims, 2, good.diag, (), (), ((5, (d, h, w, g)),))
