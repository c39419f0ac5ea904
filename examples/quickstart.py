"""Quickstart: the cvxpylayers README example, then learning a polytope end to end.

Part 1 runs the README's PyTorch example with only the import changed.

Part 2 trains a convex optimization layer: points z are projected onto an unknown
polytope {x : G x <= h}; from (z, projection) pairs alone, gradient descent through
the layer recovers G and h (the OptNet experiment in miniature). The loss curve and
the learned polytope are saved to out/quickstart.png.

Run with ``make demo`` (sets everything up) or ``python examples/quickstart.py``.
"""

from __future__ import annotations

import pathlib
import time

import cvxpy as cp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from convexlayers.torch import CvxpyLayer

OUT = pathlib.Path(__file__).resolve().parent.parent / "out"


def readme_example() -> None:
    torch.manual_seed(3)
    n, m = 2, 3
    x = cp.Variable(n)
    A = cp.Parameter((m, n))
    b = cp.Parameter(m)
    constraints = [x >= 0]
    objective = cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1))
    problem = cp.Problem(objective, constraints)
    assert problem.is_dpp()

    cvxpylayer = CvxpyLayer(problem, parameters=[A, b], variables=[x])
    A_tch = torch.randn(m, n, requires_grad=True)
    b_tch = torch.randn(m, requires_grad=True)
    (solution,) = cvxpylayer(A_tch, b_tch)
    solution.sum().backward()
    print("README example: solution", solution.detach().numpy().round(4))
    print("  d sum(x)/dA =", np.array2string(A_tch.grad.numpy(), precision=4).replace("\n", ""))
    print("  status", cvxpylayer.info.status[0].value, "iterations", cvxpylayer.info.iterations[0])


def projection_layer(num_faces: int) -> CvxpyLayer:
    """x*(z, G, h) = argmin ||x − z||² s.t. G x <= h."""
    x = cp.Variable(2)
    z = cp.Parameter(2)
    G = cp.Parameter((num_faces, 2))
    h = cp.Parameter(num_faces)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [G @ x <= h])
    return CvxpyLayer(problem, parameters=[z, G, h], variables=[x])


def polygon(num_faces: int, radius: float, phase: float) -> tuple[np.ndarray, np.ndarray]:
    angles = phase + 2 * np.pi * np.arange(num_faces) / num_faces
    return np.stack([np.cos(angles), np.sin(angles)], axis=1), np.full(num_faces, radius)


def train(steps: int = 150, batch: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    layer = projection_layer(5)
    G_true, h_true = (torch.tensor(a) for a in polygon(5, 1.0, 0.3))
    G = torch.tensor(polygon(5, 1.5, 0.0)[0] + 0.2 * rng.standard_normal((5, 2)),
                     requires_grad=True)
    h = torch.ones(5, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([G, h], lr=0.05)
    losses = []
    for _ in range(steps):
        z = torch.tensor(rng.uniform(-2, 2, (batch, 2)))
        with torch.no_grad():
            (target,) = layer(z, G_true, h_true)
        (pred,) = layer(z, G, h)
        loss = ((pred - target) ** 2).sum(dim=1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, (G_true, h_true), (G.detach(), h.detach())


def plot(losses, true, learned, path: pathlib.Path) -> None:
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.2))
    ax1.semilogy(losses)
    ax1.set(xlabel="step", ylabel="mean squared error", title="Training through the layer")
    grid = np.linspace(-2, 2, 400)
    X, Y = np.meshgrid(grid, grid)
    pts = np.stack([X.ravel(), Y.ravel()], axis=1)
    for (G, h), color, label in [(true, "k", "true"), (learned, "tab:red", "learned")]:
        inside = (pts @ G.numpy().T <= h.numpy()).all(axis=1).reshape(X.shape)
        ax2.contour(X, Y, inside.astype(float), levels=[0.5], colors=color)
        ax2.plot([], [], color=color, label=label)
    ax2.set(aspect="equal", title="Polytope {x : Gx <= h}")
    ax2.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    readme_example()
    start = time.perf_counter()
    losses, true, learned = train()
    elapsed = time.perf_counter() - start
    print(f"Learned the polytope: loss {losses[0]:.3e} -> {losses[-1]:.3e} "
          f"in {len(losses)} steps of 64 QPs ({elapsed:.1f} s, forward + backward)")
    path = OUT / "quickstart.png"
    plot(losses, true, learned, path)
    print(f"Saved {path}")


if __name__ == "__main__":
    main()
