"""MLX quickstart: an ``mlx.nn`` model with a convex optimization layer as its output.

A teacher allocates a unit budget over three assets by solving a small QP on the simplex,

    x*(z) = argmin_x  ½‖L x‖² + ½ε‖x‖² − q(z)ᵀx   s.t.  x ≥ 0,  1ᵀx = 1,   q(z) = W z + c,

whose solutions often sit on an edge or a vertex of the simplex (exact zeros). A student
``mlx.nn.Module`` with the same structure (an ``nn.Linear`` for q and a free matrix L)
learns W, c and L from (z, x*(z)) pairs alone, training in float32 with
``nn.value_and_grad`` and Adam: the layer solves each batch in float64 with NumPy and
returns float32 solutions and gradients.

The example also checks the layer: its forward pass against ``problem.solve()``, and its
outputs and gradients (``mx.value_and_grad``, in float64) against the PyTorch layer's at
the same values.
"""

from __future__ import annotations

import pathlib
import time

import cvxpy as cp
import matplotlib.pyplot as plt
import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
import numpy as np

from _common import cli, progress, report, save
from convexlayers.mlx import CvxpyLayer

N, D, EPS = 3, 4, 0.05  # assets, features, ridge that makes the solution unique


def allocation_problem():
    """The QP on the simplex with parameters L (shared) and q (one per sample)."""
    x = cp.Variable(N)
    L, q = cp.Parameter((N, N), name="L"), cp.Parameter(N, name="q")
    objective = 0.5 * cp.sum_squares(L @ x) + 0.5 * EPS * cp.sum_squares(x) - q @ x
    problem = cp.Problem(cp.Minimize(objective), [x >= 0, cp.sum(x) == 1])
    return problem, L, q, x


class Allocator(nn.Module):
    """z -> x*(z): a linear model of the QP's linear term, and the QP's matrix L."""

    def __init__(self, layer: CvxpyLayer):
        super().__init__()
        self.linear = nn.Linear(D, N)
        self.L = mx.eye(N)
        self.solve = layer  # no trainable parameters of its own

    def __call__(self, z: mx.array) -> mx.array:
        (x,) = self.solve(self.L, self.linear(z))
        return x


def teacher(rng: np.random.Generator) -> dict[str, np.ndarray]:
    F = rng.standard_normal((N, N))
    return {"L": np.linalg.cholesky(F @ F.T + 0.5 * np.eye(N)).T,
            "W": 1.5 * rng.standard_normal((N, D)), "c": 0.3 * rng.standard_normal(N)}


def mse(model: Allocator, z: mx.array, target: mx.array) -> mx.array:
    return ((model(z) - target) ** 2).sum(axis=1).mean()


def train(layer, true, steps: int, batch: int, rng) -> tuple[Allocator, dict[str, list]]:
    """Adam through the layer on fresh batches; the held-out MSE every few steps."""
    mx.random.seed(0)
    model = Allocator(layer)
    opt = optim.Adam(learning_rate=0.05)
    step = nn.value_and_grad(model, mse)
    z_test = rng.standard_normal((200, D))
    (x_test,) = layer(mx.array(true["L"]), mx.array(z_test @ true["W"].T + true["c"]))
    z_test = mx.array(z_test)
    history: dict[str, list] = {"step": [], "train": [], "test": []}
    for k in progress(range(steps + 1), desc="train"):
        if k % max(1, steps // 20) == 0 or k == steps:
            history["step"].append(k)
            history["test"].append(mse(model, z_test, x_test).item())
        if k == steps:
            break
        z = rng.standard_normal((batch, D))
        (target,) = layer(mx.array(true["L"]), mx.array(z @ true["W"].T + true["c"]))
        loss, grads = step(model, mx.array(z), target)
        opt.update(model, grads)
        mx.eval(model.parameters(), opt.state)
        history["train"].append(loss.item())
    return model, history


def check_forward(layer, true, rng) -> float:
    """Max |layer − problem.solve()| over a few samples (the layer's own float64 path)."""
    problem, L, q, x = allocation_problem()
    errors = []
    for _ in range(5):
        qv = true["W"] @ rng.standard_normal(D) + true["c"]
        (sol,) = layer(mx.array(true["L"], dtype=mx.float64), mx.array(qv, dtype=mx.float64))
        L.value, q.value = true["L"], qv
        problem.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12)
        errors.append(np.abs(np.array(sol) - x.value).max())
    return float(max(errors))


def compare_with_torch(model: Allocator, layer, true, rng) -> dict[str, float]:
    """Loss and gradients w.r.t. (L, W, c) in float64: MLX layer vs PyTorch layer."""
    import torch

    from convexlayers.torch import CvxpyLayer as TorchLayer

    problem, L, q, x = allocation_problem()
    torch_layer = TorchLayer(problem, [L, q], [x])
    z = rng.standard_normal((32, D))
    (target,) = layer(mx.array(true["L"], dtype=mx.float64),
                      mx.array(z @ true["W"].T + true["c"], dtype=mx.float64))
    target = np.array(target)
    params = [np.array(model.L), np.array(model.linear.weight), np.array(model.linear.bias)]

    def loss_mlx(Lm, W, c):
        (xs,) = layer(Lm, mx.array(z, dtype=mx.float64) @ W.T + c)
        return ((xs - mx.array(target, dtype=mx.float64)) ** 2).sum(axis=1).mean()

    value, grads = mx.value_and_grad(loss_mlx, argnums=(0, 1, 2))(
        *(mx.array(p, dtype=mx.float64) for p in params))
    tparams = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    (xs,) = torch_layer(tparams[0], torch.tensor(z) @ tparams[1].T + tparams[2])
    tvalue = ((xs - torch.tensor(target)) ** 2).sum(dim=1).mean()
    tgrads = torch.autograd.grad(tvalue, tparams)
    return {
        "loss difference vs torch": abs(value.item() - tvalue.item()),
        "gradient difference vs torch": max(
            float(np.abs(np.array(g) - t.numpy()).max()) for g, t in zip(grads, tgrads,
                                                                          strict=True)),
        "gradient scale": max(float(np.abs(t.numpy()).max()) for t in tgrads),
    }


def barycentric(x: np.ndarray) -> np.ndarray:
    """Points of the simplex in the plane (vertices of an equilateral triangle)."""
    corners = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    return x @ corners


def plot(history, snapshots, diffs, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    ax = axes[0]
    ax.semilogy(history["train"], color="tab:blue", alpha=0.6, label="training batch")
    ax.semilogy(history["step"], history["test"], "o-", color="tab:red", label="held-out")
    ax.set(xlabel="Adam step", ylabel="mean squared error", title="Training through the layer")
    ax.legend()
    for ax, (title, pred, true) in zip(axes[1:3], snapshots, strict=True):
        tri = barycentric(np.eye(N + 1, N)[[0, 1, 2, 0]])
        ax.plot(tri[:, 0], tri[:, 1], color="0.6")
        t, p = barycentric(true), barycentric(pred)
        ax.plot(np.stack([t[:, 0], p[:, 0]]), np.stack([t[:, 1], p[:, 1]]), color="0.75",
                lw=0.7)
        ax.scatter(t[:, 0], t[:, 1], s=14, color="k", label="teacher x*(z)")
        ax.scatter(p[:, 0], p[:, 1], s=14, color="tab:orange", label="student")
        ax.set(aspect="equal", title=title, xticks=[], yticks=[])
        ax.legend(loc="upper right", fontsize=8)
    ax = axes[3]
    names = list(diffs)
    ax.bar(names, [max(diffs[n], 1e-18) for n in names], color=["tab:green", "tab:purple",
                                                                  "tab:gray"][: len(names)])
    ax.set_yscale("log")
    ax.set(title="float64 check: MLX layer vs references", ylabel="max absolute difference")
    ax.tick_params(axis="x", labelsize=9)
    return save(fig, out, "mlx_quickstart")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float | str]:
    rng = np.random.default_rng(0)
    problem, L, q, x = allocation_problem()
    layer = CvxpyLayer(problem, parameters=[L, q], variables=[x])
    true = teacher(rng)
    z_show = rng.standard_normal((60, D))
    (x_show,) = layer(mx.array(true["L"]), mx.array(z_show @ true["W"].T + true["c"]))
    mx.random.seed(0)
    before = np.array(Allocator(layer)(mx.array(z_show)))

    steps, batch = (25, 32) if quick else (200, 64)
    start = time.perf_counter()
    model, history = train(layer, true, steps, batch, rng)
    elapsed = time.perf_counter() - start
    prediction = model(mx.array(z_show))
    diffs = {"forward vs\nproblem.solve()": check_forward(layer, true, rng)}
    agreement = compare_with_torch(model, layer, true, rng)
    diffs["loss vs\ntorch layer"] = agreement["loss difference vs torch"]
    diffs["gradients vs\ntorch layer"] = agreement["gradient difference vs torch"]
    metrics: dict[str, float | str] = {
        "held-out MSE, start": history["test"][0],
        "held-out MSE, learned": history["test"][-1],
        "exact zeros in teacher solutions": float(np.mean(np.array(x_show) < 1e-6)),
        "forward error vs problem.solve()": diffs["forward vs\nproblem.solve()"],
        **agreement,
        "output dtype": str(prediction.dtype).removeprefix("mlx.core."),
        "training seconds": elapsed,
    }
    snapshots = [("Held-out solutions, untrained", before, np.array(x_show)),
                 (f"After {steps} steps", np.array(prediction), np.array(x_show))]
    path = plot(history, snapshots, diffs, out)
    report(f"MLX quickstart ({steps} steps of {batch} QPs, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
