"""Approximate dynamic programming: learning the value function of a control policy (PyTorch).

A small unstable linear system x⁺ = A x + B u (n = 4 states, m = 2 inputs, ‖u‖∞ ≤ 1)
is driven toward the origin; the true closed-loop cost of a rollout is
Σ_t ‖xₜ‖² + ‖uₜ‖² over 20 steps. The policy is an approximate-dynamic-programming
(one-step lookahead) policy with a quadratic value function V(x) = xᵀPx:

    u(x) = argmin_u  ‖u‖² + (Ax + Bu)ᵀ P (Ax + Bu)    s.t.  ‖u‖∞ ≤ 1,

with P = LᵀL + εI positive definite by construction. To keep the layer DPP-compliant
the products with L are formed outside the problem: its parameters are z = Ax,
Lz = LAx and LB = LB, and the value term is ‖Lz + LB u‖² + ε‖z + Bu‖². The factor L
starts at the untrained choice L = I (P = (1 + ε)I: greedy, the future barely counts)
and is learned with Adam by differentiating the mean closed-loop cost of simulated
rollouts from a batch of initial states through all 20 solves per rollout (Agrawal,
Barratt, Boyd, Stellato, "Learning convex optimization control policies", 2020). The
held-out closed-loop cost of the learned policy is compared with the untrained one's
and with that of the textbook choice, P from the Riccati equation of the unconstrained
problem (which ignores the input box).
"""

from __future__ import annotations

import pathlib

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg
import torch

from _common import cli, progress, report, save
from convexlayers.torch import CvxpyLayer

N_X, N_U = 4, 2
STEPS = 20  # closed-loop steps of a rollout
EPS = 1e-3  # P = LᵀL + εI


def dynamics() -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random system, A scaled to spectral radius 1.1 (unstable)."""
    rng = np.random.default_rng(3)
    A = rng.standard_normal((N_X, N_X))
    A *= 1.1 / max(abs(np.linalg.eigvals(A)))
    B = rng.standard_normal((N_X, N_U))
    return torch.tensor(A), torch.tensor(B)


def adp_layer(B: np.ndarray) -> CvxpyLayer:
    """The policy: parameters z = Ax, Lz = LAx, LB = LB; output u."""
    u = cp.Variable(N_U)
    z = cp.Parameter(N_X)
    Lz = cp.Parameter(N_X)
    LB = cp.Parameter((N_X, N_U))
    cost = (cp.sum_squares(u) + cp.sum_squares(Lz + LB @ u)
            + EPS * cp.sum_squares(z + B @ u))
    problem = cp.Problem(cp.Minimize(cost), [cp.abs(u) <= 1])
    assert problem.is_dpp()
    return CvxpyLayer(problem, parameters=[z, Lz, LB], variables=[u])


def rollout(layer, L, x0, steps: int):
    """Closed loop from a batch of initial states: mean cost per step, states and inputs."""
    A, B = dynamics()
    LB = (L @ B).expand(x0.shape[0], N_X, N_U)
    x, cost, states, inputs = x0, 0.0, [x0], []
    for _ in range(steps):
        z = x @ A.T
        (u,) = layer(z, z @ L.T, LB)
        cost = cost + (x * x).sum(1) + (u * u).sum(1)
        x = z + u @ B.T
        states.append(x)
        inputs.append(u)
    return cost.mean() / steps, torch.stack(states, 1), torch.stack(inputs, 1)


def initial_states(n: int, gen: torch.Generator) -> torch.Tensor:
    return 2.0 * torch.randn(n, N_X, generator=gen, dtype=torch.float64)


def riccati_factor() -> torch.Tensor:
    """L with LᵀL + εI = P, P the solution of the unconstrained problem's Riccati equation."""
    A, B = (m.numpy() for m in dynamics())
    P = scipy.linalg.solve_discrete_are(A, B, np.eye(N_X), np.eye(N_U))
    return torch.tensor(np.linalg.cholesky(P - EPS * np.eye(N_X)).T)


def train(layer, iters: int, x0: torch.Tensor, steps: int):
    """Adam on L from the untrained L = I, on a fixed set of initial states."""
    L = torch.eye(N_X, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([L], lr=0.1)
    losses = []
    for _ in progress(range(iters), desc="learn P = LᵀL + εI"):
        loss, _, _ = rollout(layer, L, x0, steps)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return L.detach(), losses


def plot(losses, untrained, learned, metrics, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(losses, color="tab:blue", label="training set")
    for key, color in [("untrained", "tab:red"), ("learned", "tab:green"),
                       ("Riccati", "tab:gray")]:
        axes[0].axhline(metrics[f"{key} held-out cost"], color=color, ls="--",
                        label=f"{key} P (held out)")
    axes[0].set(xlabel="iteration", ylabel="closed-loop cost per step",
                title=f"Training through {STEPS} solves per rollout")
    axes[0].legend(fontsize=8)
    for (states, inputs), color, label in [(untrained, "tab:red", "untrained, L = I"),
                                           (learned, "tab:green", "learned L")]:
        norms = states.norm(dim=2)
        for i in range(states.shape[0]):
            axes[1].plot(norms[i], color=color, alpha=0.7, label=label if i == 0 else None)
        axes[2].plot(inputs[0, :, 0], color=color, label=f"{label}: u₁")
        axes[2].plot(inputs[0, :, 1], color=color, ls=":", label=f"{label}: u₂")
    axes[1].set(yscale="log", xlabel="step", ylabel="‖xₜ‖",
                title="Held-out trajectories: distance to the origin")
    axes[1].legend(fontsize=8)
    axes[2].axhline(1, color="gray", lw=0.8)
    axes[2].axhline(-1, color="gray", lw=0.8)
    axes[2].set(xlabel="step", ylabel="input",
                title="Inputs of the first trajectory (‖u‖∞ ≤ 1)")
    axes[2].legend(fontsize=7)
    return save(fig, out, "adp_control")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    _, B = dynamics()
    layer = adp_layer(B.numpy())
    iters, batch = (8, 8) if quick else (60, 32)
    train_x0 = initial_states(batch, torch.Generator().manual_seed(0))
    L, losses = train(layer, iters, train_x0, STEPS)
    test = initial_states(16 if quick else 64, torch.Generator().manual_seed(1))
    with torch.no_grad():
        eye = torch.eye(N_X, dtype=torch.float64)
        cost_untrained, *untrained = rollout(layer, eye, test, STEPS)
        cost_learned, *learned = rollout(layer, L, test, STEPS)
        cost_riccati, _, _ = rollout(layer, riccati_factor(), test, STEPS)
    metrics = {
        "untrained held-out cost": cost_untrained.item(),
        "learned held-out cost": cost_learned.item(),
        "Riccati held-out cost": cost_riccati.item(),
        "improvement": 1 - cost_learned.item() / cost_untrained.item(),
        "first training loss": losses[0],
        "final training loss": losses[-1],
    }
    path = plot(losses, [t[:6] for t in untrained], [t[:6] for t in learned], metrics, out)
    report(f"ADP policy, learned value function ({iters} iterations, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
