"""Clarabel's solver object reused along a block of a batch (its data-update API).

A reused solver keeps the scaling it computed on the element it was set up on, so the
answers must be those of a fresh setup to the solver's tolerance, statuses per element
included, and elements of another scale (or with rows Clarabel's presolve would drop)
must get a setup of their own.
"""

from __future__ import annotations

import threading

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers._core import _parallel
from convexlayers._core._solution_map import SolutionMap
from convexlayers.solvers import SolverStatus, _clarabel, get_solver
from convexlayers.solvers._base import AbstractSolver
from convexlayers.torch import CvxpyLayer

CLARABEL = get_solver("CLARABEL")


def _portfolio(n: int = 8):
    """min −μᵀx + ‖Fx‖ + c‖x‖² s.t. 1ᵀx = 1, x ≤ u: a QP part whose P is a parameter,
    an SOC, equalities."""
    x = cp.Variable(n)
    mu, F, u = cp.Parameter(n), cp.Parameter((3, n)), cp.Parameter(n)
    c = cp.Parameter(nonneg=True)
    objective = -mu @ x + cp.norm(F @ x, 2) + c * cp.sum_squares(x)
    prob = cp.Problem(cp.Minimize(objective), [cp.sum(x) == 1, x >= 0, x <= u])
    return prob, [mu, F, u, c], [x]


def _data(values):
    prob, params, variables = _portfolio()
    smap = SolutionMap(prob, params, variables)
    theta, _ = smap._theta(values)
    structure = smap.program("CLARABEL").data
    return structure, structure.apply(theta)


def _values(rng, batch: int, scale=None):
    scale = np.ones(batch) if scale is None else scale
    return [rng.uniform(0, 1, (batch, 8)) * scale[:, None],
            rng.standard_normal((batch, 3, 8)) * scale[:, None, None],
            np.full((batch, 8), 0.5), rng.uniform(0.3, 0.6, batch) * scale]


def _counting(monkeypatch) -> list[int]:
    """Count Clarabel setups (the real ones run)."""
    setups = [0]
    real, lock = _clarabel._setup, threading.Lock()

    def counted(program, options):
        with lock:
            setups[0] += 1
        return real(program, options)

    monkeypatch.setattr(_clarabel, "_setup", counted)
    return setups


def _fresh(structure, data):
    return [CLARABEL.solve(structure.program(row), {}) for row in data]


def _agree(reused, fresh, tol=1e-5):
    """Statuses equal, x equal to Clarabel's tolerance (1e-8 on residuals and gap; the
    duals of this degenerate program are not unique)."""
    for r, f in zip(reused, fresh, strict=True):
        assert r.status == f.status
        if f.status.has_solution:
            np.testing.assert_allclose(r.x, f.x, atol=tol)


def test_a_block_shares_one_setup_and_answers_as_fresh_on_any_threads(monkeypatch):
    """Blocks at batch 32 (4 elements on 8 CPUs or more, 8 on 4 or fewer): one setup
    each, P, q, A and b updated on the others, the answers those of fresh setups, and
    bit for bit the same on 1 and 2 threads."""
    structure, data = _data(_values(np.random.default_rng(0), 32))
    setups = _counting(monkeypatch)
    points = []
    for threads in ("1", "2"):
        monkeypatch.setenv(_parallel.ENV_THREADS, threads)
        setups[0] = 0
        reused = _parallel.solve_all(CLARABEL, structure, data, {})
        assert setups[0] == 32 // _parallel.block_size(32)
        _agree(reused, _fresh(structure, data))
        points.append(np.stack([r.x for r in reused]))
    np.testing.assert_array_equal(points[0], points[1])


def test_an_error_stops_the_batch_and_the_first_is_raised(monkeypatch):
    """An element that raises: the other threads take no new block, and the error of
    the earliest failing element is raised whatever the threads' timing."""
    monkeypatch.setenv(_parallel.ENV_THREADS, "2")
    structure, data = _data(_values(np.random.default_rng(5), 64))
    rows, calls = list(data), []

    class Failing(type(CLARABEL)):
        def sequence(self, structure, settings):
            one = super().sequence(structure, settings)

            def solve(row, warm):
                calls.append(1)
                if row is rows[0] or row is rows[15]:  # blocks 0 and 1 (of 8 each)
                    raise RuntimeError("element 0" if row is rows[0] else "element 15")
                return one(row, warm)

            return solve

    with pytest.raises(RuntimeError, match="element 0"):
        _parallel.solve_all(Failing(), structure, rows, {})
    assert len(calls) < 64


def test_elements_of_another_scale_get_their_own_setup(monkeypatch):
    """Scales alternating by 1e3: every element is set up anew (Clarabel's update keeps
    the first element's equilibration); the same scale again is reused."""
    monkeypatch.setenv(_parallel.ENV_THREADS, "1")
    scale = np.array([1.0, 1e3, 1.0, 1e3, 1.0, 1.0, 1.0, 1.0])
    structure, data = _data(_values(np.random.default_rng(1), 8, scale))
    setups = _counting(monkeypatch)
    sequence = CLARABEL.sequence(structure, {})
    reused = [sequence(row, None) for row in data]
    assert setups[0] == 5  # 1, 1e3, 1, 1e3, 1, then the last three on the fifth's
    _agree(reused, _fresh(structure, data))


def test_statuses_per_element_on_a_reused_solver(monkeypatch):
    """An infeasible element (upper bounds summing below 1) between feasible ones on the
    same solver object: each gets its own status and the feasible ones their answers."""
    rng = np.random.default_rng(2)
    values = _values(rng, 6)
    values[2][[1, 4]] = 0.05  # 8 x 0.05 < 1: infeasible
    structure, data = _data(values)
    setups = _counting(monkeypatch)
    sequence = CLARABEL.sequence(structure, {})
    reused = [sequence(row, None) for row in data]
    assert setups[0] == 1
    assert [r.status for r in reused] == [SolverStatus.OPTIMAL, SolverStatus.INFEASIBLE,
                                          SolverStatus.OPTIMAL, SolverStatus.OPTIMAL,
                                          SolverStatus.INFEASIBLE, SolverStatus.OPTIMAL]
    _agree(reused, _fresh(structure, data))


def test_rows_presolve_would_drop_get_a_setup(monkeypatch):
    """An upper bound of 1e21 is an absent constraint to Clarabel's presolve, which only
    a setup applies: that element is not solved on the reused object."""
    values = _values(np.random.default_rng(3), 3)
    values[2][1] = 1e21  # the second element's bounds
    structure, data = _data(values)
    setups = _counting(monkeypatch)
    sequence = CLARABEL.sequence(structure, {})
    reused = [sequence(row, None) for row in data]
    assert setups[0] == 2  # the second element's own; the third is back on the first's
    _agree(reused, _fresh(structure, data))


def test_layer_outputs_and_gradients_as_with_a_setup_per_element(monkeypatch):
    """Through the layer (polished): the same outputs and gradients to 1e-9 as with a
    setup per element (the default sequence), on a batch whose scales vary."""
    prob, params, variables = _portfolio()
    rng = np.random.default_rng(4)
    values = _values(rng, 24, np.exp(rng.uniform(-1, 1, 24)))

    def run():
        layer = CvxpyLayer(prob, params, variables, solver="CLARABEL")
        tensors = [torch.tensor(v, requires_grad=True) for v in values]
        (x,) = layer(*tensors)
        grads = torch.autograd.grad((x * torch.arange(8.0)).sum(), tensors[:2])
        return x.detach().numpy(), [g.numpy() for g in grads]

    x, grads = run()
    monkeypatch.setattr(type(CLARABEL), "sequence", AbstractSolver.sequence)
    x_fresh, grads_fresh = run()
    np.testing.assert_allclose(x, x_fresh, atol=1e-9)
    for g, h in zip(grads, grads_fresh, strict=True):
        np.testing.assert_allclose(g, h, atol=1e-8)


@pytest.mark.parametrize(("cpus", "sizes"), [(1, [1, 2, 8, 8]), (2, [1, 1, 4, 8]),
                                             (16, [1, 1, 1, 4])])
def test_blocks_follow_the_machines_cpus_not_the_threads(monkeypatch, cpus, sizes):
    """Block sizes at batches 1, 2, 8 and 32: one setup per CPU's share (at most 8
    elements), whatever CONVEXLAYERS_NUM_THREADS says."""
    monkeypatch.setattr(_parallel, "_cpus", lambda: cpus)
    for threads in ("1", "7"):
        monkeypatch.setenv(_parallel.ENV_THREADS, threads)
        assert [_parallel.block_size(b) for b in (1, 2, 8, 32)] == sizes


def test_an_element_failing_on_a_reused_solver_is_solved_on_a_fresh_one(monkeypatch):
    """Found by random testing: on an equality-only LP (n = 20, E nonsingular with a
    condition number of about 2e2), the element after another one on the same solver
    object ended in a numerical error; set up anew it solves to E⁻¹f."""
    monkeypatch.setattr(_parallel, "_cpus", lambda: 1)  # one block: the pair shares it
    rng = np.random.default_rng(20007)
    n, B = int(rng.integers(2, 41)), int(rng.choice([1, 2, 3, 5, 8, 16, 32, 64]))
    E = rng.standard_normal((B, n, n)) + 2 * np.eye(n)
    f, c = rng.standard_normal((B, n)), rng.standard_normal((B, n))
    pair = [3, 26]
    x = cp.Variable(n)
    Ep, fp, cp_ = cp.Parameter((n, n)), cp.Parameter(n), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp_ @ x), [Ep @ x == fp])
    layer = CvxpyLayer(prob, [Ep, fp, cp_], [x], solver="CLARABEL")
    (out,) = layer(*(torch.tensor(v[pair]) for v in (E, f, c)))
    expected = np.linalg.solve(E[pair], f[pair][..., None])[..., 0]
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-8)
    assert all(s is SolverStatus.OPTIMAL for s in layer.info.status)
