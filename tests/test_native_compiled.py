"""The compiled (Numba) interior-point method for LPs and QPs against the array one.

Both run the same method; on every element they must reach the tolerance together,
agree on the point, and give up on the same infeasible or unbounded elements. The
layer must give the same outputs and gradients whichever runs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from convexlayers.solvers import _ipm_compiled as compiled
from convexlayers.solvers._cone_ops import Cones
from convexlayers.solvers._ipm import solve_qp_batch
from convexlayers.solvers._reduced import BatchQP, layout_for
from convexlayers.torch import CvxpyLayer
from zoo import CASES

pytest.importorskip("numba")


def _random_qp(rng, B, n, z, m, with_p=True):
    x0 = rng.standard_normal((B, n))
    P = None
    if with_p:
        L = rng.standard_normal((B, n, n)) / np.sqrt(n)
        P = L @ np.swapaxes(L, 1, 2) + 1e-3 * np.eye(n)
    Az, Al = rng.standard_normal((B, z, n)), rng.standard_normal((B, m, n))
    bz = (Az @ x0[..., None])[..., 0]
    slack = rng.uniform(0.0, 1.0, (B, m)) * (rng.random((B, m)) < 0.6)  # some active
    bl = (Al @ x0[..., None])[..., 0] + slack
    return BatchQP(P, rng.standard_normal((B, n)), Az, bz, Al, bl, Cones(m))


def _both(qp, tol=1e-9, warm=None):
    """The compiled and the array method's results."""
    assert compiled.applies(qp)
    return (compiled.solve_orthant_batch(qp, tol, 50, warm),
            solve_qp_batch(qp, tol=tol, warm=warm))


@pytest.mark.parametrize(("n", "z", "m"), [
    (5, 0, 8), (12, 3, 20), (30, 5, 40), (6, 2, 0), (1, 0, 1), (60, 20, 80), (150, 40, 120)])
def test_compiled_and_array_methods_agree_on_qps(n, z, m):
    """Same tolerance reached, same points, same iteration counts on random QPs."""
    rng = np.random.default_rng(n + 10 * z + m)
    qp = _random_qp(rng, 16, n, z, m)
    fast, ref = _both(qp)
    assert (fast.error <= 1e-9).all() and (ref.error <= 1e-9).all()
    assert np.abs(fast.iterations - ref.iterations).max() <= 1
    # Points at error 1e-9 agree to about 1e-6 where an element is nearly degenerate:
    # its rounding (the compiled kernel's reassociated sums) moves them that far (1.3e-6
    # measured on one element of 320 entries).
    np.testing.assert_allclose(fast.x, ref.x, atol=1e-5)
    np.testing.assert_allclose(fast.yl, ref.yl, atol=1e-5)


def _free_variable_qps(rng, B, n):
    """min cᵀy + ½||y||² s.t. E x = f, y >= G x − h: x free, fixed by the equalities
    alone, and H = P + G̃ᵀ diag(y_l/s) G̃ (G̃ = [G, −I]) singular on x wherever rows
    are inactive at the solution."""
    E = rng.standard_normal((B, n, n)) + 3 * np.eye(n)
    G = rng.standard_normal((B, n, n))
    P = np.zeros((B, 2 * n, 2 * n))
    P[:, n:, n:] = np.eye(n)
    q = np.concatenate([np.zeros((B, n)), rng.standard_normal((B, n))], axis=1)
    Az = np.concatenate([E, np.zeros((B, n, n))], axis=2)
    Al = np.concatenate([G, -np.eye(n)[None].repeat(B, 0)], axis=2)
    return BatchQP(P, q, Az, rng.standard_normal((B, n)), Al, rng.standard_normal((B, n)),
                   Cones(n))


@pytest.mark.parametrize("n", [4, 10, 17])
def test_unknowns_only_the_equalities_fix_do_not_stall_either_method(n):
    """Both methods reach 1e-9 on every element (before γ A_zᵀA_z was added to the
    reduced matrix, both stalled at 1e-6–1e-5 and the native solver handed a third of
    such elements to Clarabel)."""
    fast, ref = _both(_free_variable_qps(np.random.default_rng(n), 16, n))
    assert (fast.error <= 1e-9).all() and (ref.error <= 1e-9).all()
    assert fast.iterations.max() <= 15 and ref.iterations.max() <= 15
    np.testing.assert_allclose(fast.x, ref.x, atol=1e-7)


def test_the_equalities_gram_goes_where_h_may_be_singular_and_fills_nothing():
    """γ A_zᵀA_z joins the array method's reduced matrix on the free-variable QPs; not
    where P is definite (H is then), nor where it would fill a sparse block (a simplex
    row beside bounds), nor without equalities."""
    rng = np.random.default_rng(0)
    qp = _free_variable_qps(rng, 4, 5)
    assert layout_for(qp).gram
    definite = BatchQP(np.eye(10)[None].repeat(4, 0), qp.q, qp.Az, qp.bz, qp.Al, qp.bl,
                       qp.cone)
    assert not layout_for(definite).gram
    simplex = BatchQP(None, rng.standard_normal((4, 6)), np.ones((4, 1, 6)), np.ones((4, 1)),
                      -np.eye(6)[None].repeat(4, 0), np.zeros((4, 6)), Cones(6))
    assert not layout_for(simplex).gram
    no_eq = BatchQP(qp.P, qp.q, qp.Az[:, :0], qp.bz[:, :0], qp.Al, qp.bl, qp.cone)
    assert not layout_for(no_eq).gram


def test_compiled_method_stops_no_worse_on_degenerate_lps():
    """Random LPs in a box (often degenerate: both methods stall near the end, and the
    native solver polishes or hands over what they leave): the compiled method's error
    is at most the array method's, within a factor, and the points agree where both
    got close."""
    n, B = 8, 16
    rng = np.random.default_rng(26)
    qp = _random_qp(rng, B, n, 2, 16, with_p=False)
    box = np.concatenate([np.eye(n), -np.eye(n)])[None].repeat(B, 0)
    qp = BatchQP(None, qp.q, qp.Az, qp.bz, np.concatenate([qp.Al, box], axis=1),
                 np.concatenate([qp.bl, np.full((B, 2 * n), 3.0)], axis=1), Cones(32))
    fast, ref = _both(qp)
    assert (fast.error <= np.maximum(1e-9, 10 * ref.error)).all()
    both = (fast.error <= 1e-8) & (ref.error <= 1e-8)
    assert both.sum() >= 4
    np.testing.assert_allclose(fast.x[both], ref.x[both], atol=1e-5)


def test_infeasible_unbounded_and_broken_elements_are_given_up_alone():
    rng = np.random.default_rng(3)
    qp = _random_qp(rng, 6, 4, 1, 6, with_p=True)
    qp.bl[1] = -1e3  # A_l x <= -1e3 and its negation below: infeasible
    qp.Al[1, 1] = -qp.Al[1, 0]
    qp.bl[1, 1] = -1e3
    qp.q[2] = np.nan  # broken data
    P = qp.P.copy()
    P[3] = 0.0  # an LP element whose objective is unbounded below
    qp.Al[3] = 0.0
    qp.bl[3] = 1.0
    qp = BatchQP(P, qp.q, qp.Az, qp.bz, qp.Al, qp.bl, qp.cone)
    fast, ref = _both(qp)
    for res in (fast, ref):
        ok = res.error <= 1e-9
        assert not ok[[1, 2, 3]].any() and ok[[0, 4, 5]].all()
    np.testing.assert_allclose(fast.x[[0, 4, 5]], ref.x[[0, 4, 5]], atol=1e-6)


def test_warm_starts_near_the_solution_take_fewer_iterations():
    rng = np.random.default_rng(4)
    qp = _random_qp(rng, 8, 10, 2, 15)
    cold = compiled.solve_orthant_batch(qp, 1e-9, 50, None)
    warm = tuple(v.copy() for v in (cold.x, cold.yz, cold.yl, cold.s))
    for v in warm:
        v[0] = np.nan  # element 0 starts cold
    again = compiled.solve_orthant_batch(qp, 1e-9, 50, warm)
    assert (again.error <= 1e-9).all()
    assert again.iterations[0] == cold.iterations[0]
    assert (again.iterations[1:] < cold.iterations[1:]).all()
    np.testing.assert_allclose(again.x, cold.x, atol=1e-5)


def test_the_path_is_taken_only_within_its_sizes(monkeypatch):
    monkeypatch.setenv("CONVEXLAYERS_COMPILED", "1")
    assert compiled.fits(compiled.MAX_SIZE)
    assert not compiled.fits(compiled.MAX_SIZE + 1)
    soc = BatchQP(None, np.zeros((1, 2)), np.zeros((1, 0, 2)), np.zeros((1, 0)),
                  np.zeros((1, 3, 2)), np.zeros((1, 3)), Cones(0, (3,)))
    assert not compiled.applies(soc)  # other cones stay with the array method
    monkeypatch.setenv("CONVEXLAYERS_COMPILED", "0")
    assert not compiled.fits(2)


@pytest.mark.parametrize("name", ["readme", "least_squares", "lp", "qp_param_P"])
def test_layer_outputs_and_gradients_do_not_depend_on_the_path(monkeypatch, name):
    case = CASES[name]()
    rng = np.random.default_rng(7)
    draws = [case.draw(rng) for _ in range(6)]
    values = [np.stack(v) for v in zip(*draws, strict=True)]
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("CONVEXLAYERS_COMPILED", flag)
        layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver="NATIVE")
        ps = [torch.tensor(v, requires_grad=True) for v in values]
        outs = layer(*ps)
        sum((o * torch.linspace(-1, 1, o.numel(), dtype=o.dtype).reshape(o.shape)).sum()
            for o in outs).backward()
        results.append(([o.detach() for o in outs], [p.grad for p in ps]))
    for a, b in zip(results[0][0] + results[0][1], results[1][0] + results[1][1],
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=1e-8)


def test_gradcheck_through_the_compiled_path(monkeypatch):
    monkeypatch.setenv("CONVEXLAYERS_COMPILED", "1")
    case = CASES["qp_param_P"]()
    layer = CvxpyLayer(case.problem, case.parameters, case.variables, solver="NATIVE")
    rng = np.random.default_rng(8)
    draws = [case.draw(rng) for _ in range(2)]
    ps = [torch.tensor(np.stack(v), requires_grad=True) for v in zip(*draws, strict=True)]
    assert torch.autograd.gradcheck(lambda *a: layer(*a), ps)
