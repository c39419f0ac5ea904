"""Activation functions as optimization layers (PyTorch).

Four familiar activations are the solutions of small convex programs
(Amos & Kolter, OptNet; Blondel et al., "Learning with Fenchel-Young losses"):

* ReLU:      argmin_x  ½‖x − z‖²                         s.t. x ≥ 0
* sigmoid:   argmin_x  −zᵀx − Σ H_b(x_i)  (binary entropy) s.t. 0 ≤ x ≤ 1
* softmax:   argmin_x  −zᵀx − H(x)        (entropy)        s.t. 1ᵀx = 1
* sparsemax: argmin_x  ½‖x − z‖²                          s.t. 1ᵀx = 1, x ≥ 0

Each layer's outputs and gradients are compared with the closed form (to 1e-6), and a
small classifier is trained twice on a three-class spiral: once with the softmax layer
as its output and once with ``torch.softmax``. The two training curves coincide.
"""

from __future__ import annotations

import pathlib
import time

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap

from _common import cli, progress, report, save
from convexlayers.torch import CvxpyLayer


def activation_layers(k: int) -> dict[str, CvxpyLayer]:
    """The four activations, each as a layer on vectors of size ``k``."""
    x, z = cp.Variable(k), cp.Parameter(k)
    entropy = cp.sum(cp.entr(x))
    binary_entropy = cp.sum(cp.entr(x) + cp.entr(1 - x))
    problems = {
        "relu": cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - z)), [x >= 0]),
        "sigmoid": cp.Problem(cp.Minimize(-z @ x - binary_entropy), [x >= 0, x <= 1]),
        "softmax": cp.Problem(cp.Minimize(-z @ x - entropy), [cp.sum(x) == 1]),
        # ½‖x − z‖², not ‖x − z‖²: the same solution, and better scaled for Clarabel.
        "sparsemax": cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - z)),
                                [cp.sum(x) == 1, x >= 0]),
    }
    return {name: CvxpyLayer(p, parameters=[z], variables=[x]) for name, p in problems.items()}


def sparsemax(z: torch.Tensor) -> torch.Tensor:
    """Closed form of Martins & Astudillo (2016): a threshold found by sorting."""
    zs, _ = torch.sort(z, dim=-1, descending=True)
    k = torch.arange(1, z.shape[-1] + 1, dtype=z.dtype)
    cumsum = zs.cumsum(-1)
    support = (1 + k * zs > cumsum).sum(dim=-1, keepdim=True)
    tau = (cumsum.gather(-1, support - 1) - 1) / support.to(z.dtype)
    return torch.clamp(z - tau, min=0)


CLOSED_FORMS = {
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "softmax": lambda z: torch.softmax(z, dim=-1),
    "sparsemax": sparsemax,
}


def compare(layers: dict[str, CvxpyLayer], z: torch.Tensor) -> dict[str, float]:
    """Max |layer − closed form| over outputs and over gradients of a random cotangent."""
    errors = {}
    cotangent = torch.randn_like(z)
    for name, layer in layers.items():
        z1 = z.clone().requires_grad_()
        z2 = z.clone().requires_grad_()
        (y1,) = layer(z1)
        y2 = CLOSED_FORMS[name](z2)
        (g1,) = torch.autograd.grad((y1 * cotangent).sum(), z1)
        (g2,) = torch.autograd.grad((y2 * cotangent).sum(), z2)
        errors[f"{name} output error"] = (y1 - y2).abs().max().item()
        errors[f"{name} gradient error"] = (g1 - g2).abs().max().item()
    return errors


def spiral(n_per_class: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three interleaved noisy spiral arms in the plane."""
    points, labels = [], []
    for c in range(3):
        r = np.linspace(0.1, 1.0, n_per_class)
        t = 2 * np.pi * c / 3 + 3.0 * r + 0.25 * rng.standard_normal(n_per_class)
        points.append(np.stack([r * np.cos(t), r * np.sin(t)], axis=1))
        labels.append(np.full(n_per_class, c))
    return torch.tensor(np.concatenate(points)), torch.tensor(np.concatenate(labels))


def train_classifier(head, X, y, steps: int, seed: int = 0) -> tuple[list[float], torch.nn.Module]:
    """Full-batch Adam on a 2-32-32-3 MLP whose probabilities are ``head(logits)``."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.Tanh(),
                              torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)
                              ).double()
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    losses = []
    for _ in progress(range(steps), desc=f"train ({head.__name__})"):
        probs = head(net(X))
        loss = -torch.log(probs.gather(1, y[:, None]).clamp_min(1e-12)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, net


def plot(layers, losses_layer, losses_torch, net, X, y, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 4, figsize=(17, 4))
    grid = torch.linspace(-5, 5, 41, dtype=torch.float64)
    dense = torch.linspace(-5, 5, 400, dtype=torch.float64)
    ax = axes[0]
    for name, color in [("relu", "tab:blue"), ("sigmoid", "tab:orange")]:
        (values,) = layers[name](grid.repeat(3, 1).T)
        ax.plot(dense, CLOSED_FORMS[name](dense), color=color, label=f"{name} (closed form)")
        ax.plot(grid, values[:, 0], "o", color=color, ms=4, label=f"{name} (layer)")
    ax.set(xlabel="z", ylabel="activation", ylim=(-0.2, 2.2), title="Scalar activations")
    ax.legend(fontsize=8)
    ax = axes[1]
    z3 = torch.stack([grid, torch.zeros_like(grid), torch.full_like(grid, -0.5)], dim=1)
    d3 = torch.stack([dense, torch.zeros_like(dense), torch.full_like(dense, -0.5)], dim=1)
    for name, color in [("softmax", "tab:green"), ("sparsemax", "tab:red")]:
        (values,) = layers[name](z3)
        ax.plot(dense, CLOSED_FORMS[name](d3)[:, 0], color=color, label=f"{name} (closed form)")
        ax.plot(grid, values[:, 0], "o", color=color, ms=4, label=f"{name} (layer)")
    ax.set(xlabel="t", ylabel="first output", title="Probability maps of z = (t, 0, −½)")
    ax.legend(fontsize=8)
    ax = axes[2]
    ax.semilogy(losses_torch, color="k", lw=3, alpha=0.4, label="torch.softmax head")
    ax.semilogy(losses_layer, color="tab:green", ls="--", label="softmax layer head")
    ax.set(xlabel="step", ylabel="cross-entropy", title="Training the same MLP")
    ax.legend(fontsize=8)
    ax = axes[3]
    g = np.linspace(-1.2, 1.2, 200)
    GX, GY = np.meshgrid(g, g)
    with torch.no_grad():
        logits = net(torch.tensor(np.stack([GX.ravel(), GY.ravel()], axis=1)))
    colors = ListedColormap(["tab:blue", "tab:orange", "tab:green"])
    ax.contourf(GX, GY, logits.argmax(1).reshape(GX.shape).numpy(), levels=[-.5, .5, 1.5, 2.5],
                cmap=colors, alpha=0.25)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap=colors, s=8, vmin=0, vmax=2)
    ax.set(aspect="equal", title="Classifier trained through the layer")
    return save(fig, out, "activations")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    layers = activation_layers(3)
    errors = compare(layers, 3 * torch.randn(64 if quick else 512, 3, dtype=torch.float64))

    X, y = spiral(30 if quick else 100, rng)
    steps = 8 if quick else 150
    start = time.perf_counter()

    def softmax_layer(logits):
        return layers["softmax"](logits)[0]

    losses_layer, net = train_classifier(softmax_layer, X, y, steps)
    elapsed = time.perf_counter() - start
    losses_torch, _ = train_classifier(lambda t: torch.softmax(t, -1), X, y, steps)
    with torch.no_grad():
        accuracy = (net(X).argmax(1) == y).double().mean().item()
    metrics = {
        **errors,
        "max output/gradient error": max(errors.values()),
        "training-curve difference": float(np.max(np.abs(np.subtract(losses_layer,
                                                                      losses_torch)))),
        "first loss": losses_layer[0],
        "final loss": losses_layer[-1],
        "train accuracy": accuracy,
        "training seconds": elapsed,
    }
    path = plot(layers, losses_layer, losses_torch, net, X, y, out)
    report(f"Activations as layers ({steps} training steps, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
