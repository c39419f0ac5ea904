"""Learning the cost of a box-constrained MPC policy (PyTorch).

A planar double integrator (position and velocity in x and y, force in x and y,
‖u‖∞ ≤ 1) is steered to the origin. The true closed-loop cost is
Σ_t xₜᵀQxₜ + uₜᵀRuₜ over 30 steps. The policy is a short-horizon MPC:

    u(x₀) = first input of  argmin  Σ_{t<H} ‖F xₜ‖² + ‖R^½ uₜ‖² + ‖L x_H‖²
                            s.t.    x_{t+1} = A xₜ + B uₜ,  ‖uₜ‖∞ ≤ 1

with a horizon of H = 3 steps. Its cost matrices (stage factor F, terminal factor L)
start at the naive choice F = L = Q^½, which ignores everything beyond the horizon
and overshoots. Differentiating the closed-loop cost through 30 solves of the
control problem (Agrawal, Barratt, Boyd, Stellato, "Learning convex optimization
control policies", 2020) learns F and L; the learned policy's cost on held-out
initial states is compared with the naive one's and with the optimum
(the best input sequence planned over all 30 steps at once).
"""

from __future__ import annotations

import pathlib

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import cli, progress, report, save
from convexlayers.torch import CvxpyLayer

DT = 0.2
N_X, N_U, HORIZON = 4, 2, 3
STEPS = 30  # closed-loop steps of a rollout
Q = torch.diag(torch.tensor([1.0, 1.0, 0.1, 0.1], dtype=torch.float64))
R = 0.1 * torch.eye(N_U, dtype=torch.float64)


def dynamics() -> tuple[torch.Tensor, torch.Tensor]:
    """State (px, py, vx, vy), input (fx, fy): x⁺ = A x + B u."""
    eye = torch.eye(2, dtype=torch.float64)
    zero = torch.zeros(2, 2, dtype=torch.float64)
    A = torch.cat([torch.cat([eye, DT * eye], 1), torch.cat([zero, eye], 1)])
    B = torch.cat([0.5 * DT**2 * eye, DT * eye])
    return A, B


def mpc_layer(A: np.ndarray, B: np.ndarray) -> CvxpyLayer:
    """The policy: parameters x0, F, L; output the first input u_0."""
    x = cp.Variable((HORIZON + 1, N_X))
    u = cp.Variable((HORIZON, N_U))
    x0 = cp.Parameter(N_X)
    F = cp.Parameter((N_X, N_X))
    L = cp.Parameter((N_X, N_X))
    r_sqrt = np.sqrt(R.numpy())
    cost = cp.sum_squares(L @ x[HORIZON])
    constraints = [x[0] == x0, cp.abs(u) <= 1]
    for t in range(HORIZON):
        cost += cp.sum_squares(F @ x[t]) + cp.sum_squares(r_sqrt @ u[t])
        constraints.append(x[t + 1] == A @ x[t] + B @ u[t])
    problem = cp.Problem(cp.Minimize(cost), constraints)
    return CvxpyLayer(problem, parameters=[x0, F, L], variables=[u])


def rollout(layer, F, L, x0, steps: int):
    """Closed loop from a batch of initial states: mean cost, states and inputs."""
    A, B = dynamics()
    x, cost, states, inputs = x0, 0.0, [x0], []
    for _ in range(steps):
        (u_plan,) = layer(x, F, L)
        u = u_plan[:, 0]
        cost = cost + ((x @ Q) * x).sum(1) + ((u @ R) * u).sum(1)
        x = x @ A.T + u @ B.T
        states.append(x)
        inputs.append(u)
    return cost.mean() / steps, torch.stack(states, 1), torch.stack(inputs, 1)


def initial_states(n: int, gen: torch.Generator) -> torch.Tensor:
    pos = 3.0 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    vel = 1.0 * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    return torch.cat([pos, vel], 1)


def optimal_cost(x0: torch.Tensor, steps: int) -> float:
    """Lower bound: the best input sequence for each initial state, planned over all steps."""
    A, B = (m.numpy() for m in dynamics())
    x = cp.Variable((steps + 1, N_X))
    u = cp.Variable((steps, N_U))
    start = cp.Parameter(N_X)
    cost = cp.sum([cp.quad_form(x[t], Q.numpy()) + cp.quad_form(u[t], R.numpy())
                   for t in range(steps)])
    constraints = [x[0] == start, cp.abs(u) <= 1, x[1:] == x[:-1] @ A.T + u @ B.T]
    problem = cp.Problem(cp.Minimize(cost), constraints)
    total = 0.0
    for row in x0.numpy():
        start.value = row
        total += problem.solve(solver="CLARABEL")
    return total / len(x0) / steps


def train(layer, iters: int, x0: torch.Tensor, steps: int):
    """Adam on F, L from the naive F = L = Q^½, on a fixed set of initial states."""
    F = torch.sqrt(Q).clone().requires_grad_()
    L = torch.sqrt(Q).clone().requires_grad_()
    opt = torch.optim.Adam([F, L], lr=0.05)
    losses = []
    for _ in progress(range(iters), desc="learn F, L"):
        loss, _, _ = rollout(layer, F, L, x0, steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return F.detach(), L.detach(), losses


def plot(losses, naive, learned, metrics, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(losses, color="tab:blue", label="training set")
    for key, color in [("naive", "tab:red"), ("learned", "tab:green"), ("optimal", "k")]:
        axes[0].axhline(metrics[f"{key} held-out cost"], color=color, ls="--",
                        label=f"{key} (held out)")
    axes[0].set(xlabel="iteration", ylabel="closed-loop cost per step",
                title=f"Training through {STEPS} MPC solves per rollout")
    axes[0].legend(fontsize=8)
    for (states, inputs), color, label in [(naive, "tab:red", "naive F = L = Q½"),
                                           (learned, "tab:green", "learned F, L")]:
        for i in range(states.shape[0]):
            axes[1].plot(states[i, :, 0], states[i, :, 1], color=color, alpha=0.7,
                         label=label if i == 0 else None)
            axes[1].plot(states[i, 0, 0], states[i, 0, 1], "ko", ms=3)
        axes[2].plot(inputs[0, :, 0], color=color, label=f"{label}: fx")
        axes[2].plot(inputs[0, :, 1], color=color, ls=":", label=f"{label}: fy")
    axes[1].plot(0, 0, "k*", ms=12)
    axes[1].set(aspect="equal", xlabel="px", ylabel="py", title="Held-out trajectories")
    axes[1].legend(fontsize=8)
    axes[2].axhline(1, color="gray", lw=0.8)
    axes[2].axhline(-1, color="gray", lw=0.8)
    axes[2].set(xlabel="step", ylabel="input", title="Inputs of the first trajectory (|u| ≤ 1)")
    axes[2].legend(fontsize=7)
    return save(fig, out, "mpc_control")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    A, B = dynamics()
    layer = mpc_layer(A.numpy(), B.numpy())
    iters, batch = (10, 6) if quick else (30, 16)
    train_x0 = initial_states(batch, torch.Generator().manual_seed(0))
    F, L, losses = train(layer, iters, train_x0, STEPS)
    test = initial_states(8 if quick else 48, torch.Generator().manual_seed(1))
    with torch.no_grad():
        cost_naive, *naive = rollout(layer, torch.sqrt(Q), torch.sqrt(Q), test, STEPS)
        cost_learned, *learned = rollout(layer, F, L, test, STEPS)
    metrics = {
        "naive held-out cost": cost_naive.item(),
        "learned held-out cost": cost_learned.item(),
        "optimal held-out cost": optimal_cost(test, STEPS),
        "improvement": 1 - cost_learned.item() / cost_naive.item(),
        "gap to optimum closed": 0.0,
        "first training loss": losses[0],
        "final training loss": losses[-1],
    }
    metrics["gap to optimum closed"] = (
        (metrics["naive held-out cost"] - metrics["learned held-out cost"])
        / (metrics["naive held-out cost"] - metrics["optimal held-out cost"]))
    path = plot(losses, [t[:6] for t in naive], [t[:6] for t in learned], metrics, out)
    report(f"Box-constrained MPC, learned cost ({iters} iterations, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
