"""Warm-started MPC of a chain of oscillating masses, differentiated through (PyTorch).

Three masses joined by springs (and to walls at both ends) are kicked by random forces;
two actuators between neighbouring masses push them back (|u| ≤ 0.5). The controller is
an MPC of horizon H = 12 re-solved at every step from the measured state x₀:

    minimize  Σ_t ‖x_t‖² + r ‖u_t‖²   s.t.  x_{t+1} = A x_t + B u_t,  ‖u_t‖∞ ≤ 0.5,

for a batch of 16 trajectories at once. Between two steps the state moves a little, so
the previous plan is a good start for the next solve: ``layer(x0, r, warm_start=True)``
starts SCS and the native batched interior-point solver (``solver="NATIVE"``) from the
layer's previous solution, element by element (Clarabel ignores it).

Each solver runs the closed loop twice, cold and warm, with autograd on: the warm run
takes fewer iterations, and its trajectories, closed-loop cost and the cost's gradient
with respect to the input weight r (backpropagated through every MPC solve) are the
cold run's, to rounding: a warm start changes where the solver starts, not the answer.
"""

from __future__ import annotations

import pathlib
import time

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import scipy.linalg as sla
import torch

from _common import cli, progress, report, save
from convexlayers.torch import CvxpyLayer

MASSES, HORIZON, DT, U_MAX = 3, 12, 0.05, 0.5
N_X, N_U = 2 * MASSES, MASSES - 1
SOLVERS = ("NATIVE", "SCS")


def dynamics() -> tuple[np.ndarray, np.ndarray]:
    """Exact discretization (zero-order hold) of the spring-mass chain: x = (positions,
    velocities); actuator i pushes mass i and pulls mass i + 1."""
    K = 2 * np.eye(MASSES) - np.eye(MASSES, k=1) - np.eye(MASSES, k=-1)  # unit springs
    F = np.zeros((MASSES, N_U))
    F[np.arange(N_U), np.arange(N_U)], F[np.arange(N_U) + 1, np.arange(N_U)] = 1.0, -1.0
    Ac = np.block([[np.zeros((MASSES, MASSES)), np.eye(MASSES)], [-K, -0.1 * np.eye(MASSES)]])
    Bc = np.vstack([np.zeros((MASSES, N_U)), F])
    M = sla.expm(np.block([[Ac, Bc], [np.zeros((N_U, N_X + N_U))]]) * DT)
    return M[:N_X, :N_X], M[:N_X, N_X:]


def mpc_layer(solver: str) -> CvxpyLayer:
    """(x₀, r) -> the planned inputs u (H, N_U)."""
    A, B = dynamics()
    x, u = cp.Variable((HORIZON + 1, N_X)), cp.Variable((HORIZON, N_U))
    x0, r = cp.Parameter(N_X), cp.Parameter(nonneg=True)
    cost = cp.sum_squares(x) + r * cp.sum_squares(u)
    constraints = [x[0] == x0, cp.abs(u) <= U_MAX, x[1:] == x[:-1] @ A.T + u @ B.T]
    return CvxpyLayer(cp.Problem(cp.Minimize(cost), constraints), parameters=[x0, r],
                      variables=[u], solver=solver)


def disturbances(steps: int, batch: int) -> torch.Tensor:
    """Random force kicks on the masses' velocities, the same for every run."""
    gen = torch.Generator().manual_seed(0)
    kicks = torch.zeros(steps, batch, N_X, dtype=torch.float64)
    kicks[:, :, MASSES:] = 0.05 * torch.randn(steps, batch, MASSES, generator=gen,
                                             dtype=torch.float64)
    return kicks


def initial_states(batch: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    x0 = torch.zeros(batch, N_X, dtype=torch.float64)
    x0[:, :MASSES] = 3.0 * torch.randn(batch, MASSES, generator=gen, dtype=torch.float64)
    return x0


def closed_loop(layer: CvxpyLayer, kicks: torch.Tensor, warm: bool) -> dict:
    """The closed loop from the initial states, autograd on; its record, with the true
    cost's gradient with respect to the MPC's input weight r."""
    A, B = (torch.tensor(m) for m in dynamics())
    r = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    x = initial_states(kicks.shape[1])
    rec: dict = {"iterations": [], "seconds": [], "x": [x.detach()], "u": []}
    cost = torch.zeros((), dtype=torch.float64)
    for t in progress(range(kicks.shape[0]), desc="warm" if warm else "cold"):
        start = time.perf_counter()
        (plan,) = layer(x, r, warm_start=warm and t > 0)  # t = 0: no previous solution
        rec["seconds"].append(time.perf_counter() - start)
        rec["iterations"].append(layer.info.iterations.mean())
        u = plan[:, 0]
        cost = cost + (x**2).sum(1).mean() + 0.1 * (u**2).sum(1).mean()
        x = x @ A.T + u @ B.T + kicks[t]
        rec["x"].append(x.detach())
        rec["u"].append(u.detach())
    cost.backward()
    rec.update(cost=cost.item(), grad=r.grad.item(), x=torch.stack(rec["x"], 1),
               u=torch.stack(rec["u"], 1), iterations=np.array(rec["iterations"]))
    return rec


def compare(solver: str, cold: dict, warm: dict) -> dict[str, float]:
    return {
        f"{solver}: iterations per solve, cold": float(cold["iterations"].mean()),
        f"{solver}: iterations per solve, warm": float(warm["iterations"].mean()),
        f"{solver}: iterations saved": 1 - warm["iterations"].sum() / cold["iterations"].sum(),
        f"{solver}: seconds per step, cold": float(np.mean(cold["seconds"])),
        f"{solver}: seconds per step, warm": float(np.mean(warm["seconds"])),
        f"{solver}: max |Δu| warm vs cold": (warm["u"] - cold["u"]).abs().max().item(),
        f"{solver}: max |Δx| warm vs cold": (warm["x"] - cold["x"]).abs().max().item(),
        f"{solver}: closed-loop cost": warm["cost"],
        f"{solver}: |Δ cost| warm vs cold": abs(warm["cost"] - cold["cost"]),
        f"{solver}: d cost / dr": warm["grad"],
        f"{solver}: |Δ d cost / dr| warm vs cold": abs(warm["grad"] - cold["grad"]),
    }


def plot(runs: dict, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    ax = axes[0]
    warm = runs["NATIVE"]["warm"]
    steps = np.arange(warm["u"].shape[1]) * DT
    for i in range(MASSES):
        ax.plot(np.arange(warm["x"].shape[1]) * DT, warm["x"][0, :, i], label=f"mass {i + 1}")
    for i in range(N_U):
        ax.step(steps, warm["u"][0, :, i], where="post", lw=0.8, ls="--",
                label=f"force {i + 1} (|u| ≤ {U_MAX})")
    ax.set(xlabel="time", ylabel="position / force", title="One trajectory of the closed loop")
    ax.legend(fontsize=7, ncol=2)
    ax = axes[1]
    for k, (solver, pair) in enumerate(runs.items()):
        ax.plot(pair["cold"]["iterations"], color=f"C{k}", label=f"{solver} cold")
        ax.plot(pair["warm"]["iterations"], "--", color=f"C{k}",
                label=f"{solver} warm_start=True")
    ax.set(yscale="log", xlabel="MPC step", ylabel="mean iterations per solve",
           title="Iterations at each step (batch mean)")
    ax.legend(fontsize=8)
    ax = axes[2]
    for k, pair in enumerate(runs.values()):
        cold, warm = (pair[w]["iterations"].mean() for w in ("cold", "warm"))
        ax.bar([3 * k], [cold], color=f"C{k}", alpha=0.5)
        ax.bar([3 * k + 1], [warm], color=f"C{k}")
        ax.text(3 * k + 1, warm, f"−{100 * (1 - warm / cold):.0f}%", ha="center",
                va="bottom")
    ax.set_xticks([3 * k + j for k in range(len(runs)) for j in (0, 1)],
                  [f"{s}\n{w}" for s in runs for w in ("cold", "warm")])
    ax.set(yscale="log", ylabel="mean iterations per solve",
           title="Same answer, fewer iterations")
    return save(fig, out, "mpc_warm_start")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    steps, batch = (12, 16) if quick else (80, 16)
    kicks = disturbances(steps, batch)
    runs, metrics = {}, {}
    for solver in SOLVERS:
        layer = mpc_layer(solver)
        runs[solver] = {"cold": closed_loop(layer, kicks, warm=False),
                        "warm": closed_loop(layer, kicks, warm=True)}
        metrics.update(compare(solver, runs[solver]["cold"], runs[solver]["warm"]))
    path = plot(runs, out)
    report(f"MPC with warm starts, {steps} steps x {batch} trajectories (figure {path})",
           metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
