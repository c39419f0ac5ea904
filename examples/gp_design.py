"""Tuning a geometric program to meet a target design (PyTorch, ``gp=True``).

The box design of the CVXPY DGP tutorial is a log-log convex program:

    maximize    h·w·d                         (volume)
    subject to  2(h·w + h·d) ≤ A_wall,  w·d ≤ A_floor,
                d = ρ·w,  0.5 ≤ h/w ≤ 4.

A designer wants a box of given dimensions (h, w, d) to come out as the optimum, and
asks which wall and floor budgets and depth ratio (A_wall, A_floor, ρ) produce it.
The layer (``gp=True``) differentiates the optimal box with respect to the three
parameters, and gradient descent on their logarithms drives the optimal box onto the
target, for a batch of 16 targets at once (one solve of 16 geometric programs per step).

The depth ratio is an equality on purpose: a parameter moves the optimum only through
a constraint that is active. A bound γ ≤ d/w ≤ δ that the starting design leaves slack
has a zero gradient, and gradient descent could never make it bind.
"""

from __future__ import annotations

import pathlib

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import cli, progress, report, save
from convexlayers.torch import CvxpyLayer

NAMES = ["A_wall", "A_floor", "rho"]


def box_layer() -> CvxpyLayer:
    h, w, d = (cp.Variable(pos=True) for _ in range(3))
    A_wall, A_floor, rho = (cp.Parameter(pos=True, name=n) for n in NAMES)
    problem = cp.Problem(cp.Maximize(h * w * d), [
        2 * (h * w + h * d) <= A_wall, w * d <= A_floor, d == rho * w,
        h / w >= 0.5, h / w <= 4,
    ])
    assert problem.is_dgp(dpp=True)
    return CvxpyLayer(problem, parameters=[A_wall, A_floor, rho], variables=[h, w, d], gp=True)


def targets(count: int, rng: np.random.Generator, layer: CvxpyLayer) -> torch.Tensor:
    """Reachable target boxes: the optima of random, hidden parameters."""
    hidden = np.exp(rng.uniform(-0.5, 0.5, (count, 3))) * np.array([100.0, 10.0, 1.0])
    with torch.no_grad():
        return torch.stack(layer(*torch.tensor(hidden).T), dim=1)


def train(layer, target: torch.Tensor, steps: int):
    """Adam on log-parameters, one set per target, from a common starting design."""
    start = np.log([200.0, 20.0, 1.0])
    log_params = torch.tensor(np.tile(start, (len(target), 1)), requires_grad=True)
    opt = torch.optim.Adam([log_params], lr=0.05)
    losses, boxes = [], []
    for _ in progress(range(steps), desc="tune parameters"):
        box = torch.stack(layer(*torch.exp(log_params).T), dim=1)
        loss = ((torch.log(box) - torch.log(target)) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        boxes.append(box.detach()[0].numpy())
    with torch.no_grad():
        final = torch.stack(layer(*torch.exp(log_params).T), dim=1)
    return torch.exp(log_params).detach(), losses, np.array(boxes), final


def plot(losses, boxes, target, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].semilogy(losses)
    axes[0].set(xlabel="step", ylabel="mean ‖log box − log target‖²",
                title="Tuning 16 geometric programs")
    for i, (name, color) in enumerate(zip("hwd", ["tab:blue", "tab:orange", "tab:green"],
                                          strict=True)):
        axes[1].plot(boxes[:, i], color=color, label=f"{name} (optimal box)")
        axes[1].axhline(float(target[0, i]), color=color, ls="--", lw=1, label=f"{name} target")
    axes[1].set(xlabel="step", ylabel="dimension", title="First target: the optimal box converges")
    axes[1].legend(fontsize=8, ncol=2)
    return save(fig, out, "gp_design")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    rng = np.random.default_rng(0)
    layer = box_layer()
    target = targets(4 if quick else 16, rng, layer)
    params, losses, boxes, final = train(layer, target, 30 if quick else 150)
    rel_error = ((final - target).abs() / target).max().item()
    metrics = {
        "first loss": losses[0],
        "final loss": losses[-1],
        "reduction factor": losses[0] / losses[-1],
        "max relative error of the boxes": rel_error,
        "parameters of target 0": ", ".join(f"{n}={v:.3g}" for n, v in zip(NAMES, params[0],
                                                                            strict=True)),
    }
    path = plot(losses, boxes, target, out)
    report(f"Geometric-program design ({len(losses)} steps, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
