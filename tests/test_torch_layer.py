"""PyTorch layer behaviour: README examples, batching, dtypes, no_grad, diagnostics, compile."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers import SolverStatus
from convexlayers.torch import CvxpyLayer
from zoo import readme_problem


def test_readme_torch_example():
    prob, A, b, x = readme_problem()
    assert prob.is_dpp()
    layer = CvxpyLayer(prob, parameters=[A, b], variables=[x])
    A_t = torch.randn(3, 2, requires_grad=True)
    b_t = torch.randn(3, requires_grad=True)
    (solution,) = layer(A_t, b_t)
    solution.sum().backward()
    assert solution.dtype == torch.float32 and solution.shape == (2,)
    assert A_t.grad.shape == (3, 2) and b_t.grad.shape == (3,)
    assert torch.isfinite(A_t.grad).all() and torch.isfinite(b_t.grad).all()


@pytest.mark.parametrize(
    "solver_args",
    [
        {"solve_method": "ECOS"},
        {"eps": 1e-8},
        {"eps": 1e-8, "max_iters": 10000, "acceleration_lookback": 0},
        {"solve_method": "SCS", "eps": 1e-8, "max_iters": 10000, "acceleration_lookback": 0},
    ],
)
def test_readme_solver_args(solver_args):
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, parameters=[A, b], variables=[x])
    A_v, b_v = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    (ref,) = layer(A_v, b_v)
    (sol,) = layer(A_v, b_v, solver_args=solver_args)
    expected = solver_args.get("solve_method", "CLARABEL")
    assert layer.info.solver == expected
    torch.testing.assert_close(sol, ref, atol=1e-5, rtol=0)


def test_readme_gp_example():
    x, y, z = (cp.Variable(pos=True) for _ in range(3))
    a = cp.Parameter(pos=True, value=2.0)
    b = cp.Parameter(pos=True, value=1.0)
    c = cp.Parameter(value=0.5)
    objective = cp.Minimize(1 / (x * y * z))
    constraints = [a * (x * y + x * z + y * z) <= b, x >= y**c]
    problem = cp.Problem(objective, constraints)
    assert problem.is_dgp(dpp=True)
    layer = CvxpyLayer(problem, parameters=[a, b, c], variables=[x, y, z], gp=True)
    a_t, b_t, c_t = (torch.tensor(p.value, requires_grad=True) for p in (a, b, c))
    x_star, y_star, z_star = layer(a_t, b_t, c_t)
    (x_star + y_star + z_star).backward()
    problem.solve(gp=True)
    assert x_star.dtype == torch.float32  # like the inputs
    assert abs(x_star.item() - x.value) < 1e-5
    assert all(torch.isfinite(t.grad) for t in (a_t, b_t, c_t))


# -- batching -------------------------------------------------------------------
def _qp():
    n = 3
    x = cp.Variable(n)
    P = cp.Parameter((n, n), PSD=True)
    q = cp.Parameter(n)
    con = cp.sum(x) == 1
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), [con, x >= -1])
    return prob, P, q, x, con


def _psd(rng, batch=None):
    F = rng.standard_normal((*(() if batch is None else (batch,)), 3, 3))
    return torch.tensor(F @ np.swapaxes(F, -1, -2) + np.eye(3), requires_grad=True)


def test_batched_equals_loop_forward_and_gradients():
    prob, P, q, x, con = _qp()
    layer = CvxpyLayer(prob, [P, q], [x, con.dual_variables[0]])
    rng = np.random.default_rng(0)
    Pb = _psd(rng, 4)
    qb = torch.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    xs, duals = layer(Pb, qb)
    assert xs.shape == (4, 3) and duals.shape == (4,)
    (xs.sum() + duals.sum()).backward()
    for i in range(4):
        Pi = Pb.detach()[i].clone().requires_grad_()
        qi = qb.detach()[i].clone().requires_grad_()
        xi, di = layer(Pi, qi)
        torch.testing.assert_close(xi, xs[i], atol=1e-10, rtol=0)
        (xi.sum() + di.sum()).backward()
        torch.testing.assert_close(Pi.grad, Pb.grad[i], atol=1e-9, rtol=0)
        torch.testing.assert_close(qi.grad, qb.grad[i], atol=1e-9, rtol=0)


def test_mixed_batched_and_unbatched_parameters():
    prob, P, q, x, _ = _qp()
    layer = CvxpyLayer(prob, [P, q], [x])
    rng = np.random.default_rng(1)
    P1 = _psd(rng)
    qb = torch.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    (xs,) = layer(P1, qb)
    assert xs.shape == (5, 3)
    xs.sum().backward()
    total = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(5):
        Pi = P1.detach().clone().requires_grad_()
        (xi,) = layer(Pi, qb.detach()[i])
        xi.sum().backward()
        total += Pi.grad
    torch.testing.assert_close(P1.grad, total, atol=1e-9, rtol=0)


def test_explicit_batch_of_one_keeps_its_dimension():
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    (sol,) = layer(torch.randn(1, 3, 2), torch.randn(3))
    assert sol.shape == (1, 2)


def test_symmetric_parameter_gets_a_symmetric_gradient():
    prob, P, q, x, _ = _qp()
    layer = CvxpyLayer(prob, [P, q], [x])
    Pt = _psd(np.random.default_rng(2))
    (sol,) = layer(Pt, torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
    (sol * torch.tensor([1.0, 2.0, -3.0], dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(Pt.grad, Pt.grad.T, atol=1e-12, rtol=0)


# -- dtypes, devices, autograd state -------------------------------------------------
@pytest.mark.parametrize(
    ("dtypes", "expected"),
    [
        ((torch.float32, torch.float32), torch.float32),
        ((torch.float64, torch.float64), torch.float64),
        ((torch.float32, torch.float64), torch.float64),
    ],
)
def test_output_dtype_follows_inputs(dtypes, expected):
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    A_t = torch.randn(3, 2, dtype=dtypes[0], requires_grad=True)
    b_t = torch.randn(3, dtype=dtypes[1], requires_grad=True)
    (sol,) = layer(A_t, b_t)
    assert sol.dtype == expected
    sol.sum().backward()
    assert A_t.grad.dtype == dtypes[0] and b_t.grad.dtype == dtypes[1]


def test_no_grad_prepares_nothing_for_backward():
    prob, A, b, x = readme_problem()
    layer = CvxpyLayer(prob, [A, b], [x])
    A_t, b_t = torch.randn(3, 2, requires_grad=True), torch.randn(3, requires_grad=True)
    with torch.no_grad():
        (sol,) = layer(A_t, b_t)
    assert sol.grad_fn is None and not sol.requires_grad
    (sol,) = layer(A_t.detach(), b_t.detach())
    assert sol.grad_fn is None and not sol.requires_grad
    (sol,) = layer(A_t, b_t)
    assert sol.grad_fn is not None


def test_info_reports_status_iterations_time_and_residuals():
    prob, P, q, x, _ = _qp()
    layer = CvxpyLayer(prob, [P, q], [x])
    assert layer.info is None
    rng = np.random.default_rng(3)
    qb = torch.tensor(rng.standard_normal((3, 3)), requires_grad=True)
    (xs,) = layer(_psd(rng), qb)
    info = layer.info
    assert info.status == (SolverStatus.OPTIMAL,) * 3 and info.ok
    assert (info.iterations > 0).all() and (info.solve_time > 0).all()
    assert (info.residual < 1e-6).all() and info.derivative is None
    xs.sum().backward()
    assert layer.info.derivative.method == ("lu",) * 3
    assert (layer.info.derivative.residual < 1e-10).all()


def test_module_in_a_training_loop_reduces_the_loss():
    """Learn q so that the QP's solution hits a target."""
    prob, P, q, x, _ = _qp()
    layer = CvxpyLayer(prob, [P, q], [x])
    P_v = torch.eye(3, dtype=torch.float64)
    q_t = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    opt = torch.optim.SGD([q_t], lr=0.5)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        (sol,) = layer(P_v, q_t)
        loss = ((sol - target) ** 2).sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 1e-3 * losses[0]


# -- torch.compile --------------------------------------------------------------
def test_torch_compile_fullgraph_matches_eager():
    n, m = 3, 4
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.1 * cp.sum_squares(x)), [x >= 0])

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(5, m * n, dtype=torch.float64)
            self.b = torch.nn.Parameter(torch.randn(m, dtype=torch.float64))
            self.layer = CvxpyLayer(prob, [A, b], [x])

        def forward(self, z):
            (sol,) = self.layer(self.lin(z).reshape(-1, m, n), self.b)
            return (sol**2).sum()

    torch.manual_seed(0)
    model = Model()
    z = torch.randn(6, 5, dtype=torch.float64)
    eager = model(z)
    eager.backward()
    g_eager = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(z)
    out.backward()
    torch.testing.assert_close(out.detach(), eager.detach(), atol=1e-12, rtol=0)
    for g, p in zip(g_eager, model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, g, atol=1e-10, rtol=0)


def test_batch_solved_on_threads_equals_serial(monkeypatch):
    prob, P, q, x, _ = _qp()
    layer = CvxpyLayer(prob, [P, q], [x], solver="CLARABEL")  # element by element
    rng = np.random.default_rng(5)
    args = (_psd(rng, 6), torch.tensor(rng.standard_normal((6, 3))))
    monkeypatch.setenv("CONVEXLAYERS_NUM_THREADS", "1")
    (serial,) = layer(*args)
    monkeypatch.setenv("CONVEXLAYERS_NUM_THREADS", "3")
    (threaded,) = layer(*args)
    torch.testing.assert_close(threaded, serial, atol=0, rtol=0)
    monkeypatch.setenv("CONVEXLAYERS_NUM_THREADS", "many")
    with pytest.raises(ValueError, match="CONVEXLAYERS_NUM_THREADS='many'"):
        layer(*args)
