"""Solving and training on a Dask cluster with the layer's executor (PyTorch).

A decision maker splits a budget over eight activities by the QP

    x*(c) = argmin_x  ½ xᵀDx − cᵀx   s.t.  x ≥ 0,  1ᵀx = 1,

where the values c = W z depend linearly on five features z of the day. The matrix W is
hidden; only her decisions are seen. A local Dask cluster (two worker processes, one
thread each) does the solving: with ``layer.executor = client.get_executor()`` every batch
larger than one chunk (128 problems by default) is split into chunks solved on the
workers, forward and backward.

1. Data: her decisions on tens of thousands of days, solved on the cluster (and once
   more in this process, to check that they are the same).
2. Training: a model Ŵ learns from (z, x) pairs alone by Adam on ‖x*(Ŵz) − x‖², each
   minibatch's QPs solved and differentiated on the cluster; the same training in this
   process, from the same start, gives the same losses and parameters step by step.

Nothing in the model knows about Dask: the executor is a property of the layer, set and
unset at will; it does not travel when the layer is pickled.
"""

from __future__ import annotations

import logging
import pathlib
import time

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch
from distributed import Client, LocalCluster, get_task_stream

from _common import cli, plot_agreement, progress, report, save
from convexlayers import ChunkedExecutor
from convexlayers.torch import CvxpyLayer

N_ACT, N_FEAT, WORKERS, LR = 8, 5, 2, 0.05


def decision_layer() -> CvxpyLayer:
    """c -> x*(c), the decision on the simplex."""
    x, c = cp.Variable(N_ACT), cp.Parameter(N_ACT)
    D = np.diag(np.random.default_rng(1).uniform(0.5, 1.5, N_ACT))
    problem = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, D) - c @ x), [x >= 0, cp.sum(x) == 1])
    return CvxpyLayer(problem, parameters=[c], variables=[x])


def start_cluster():
    """A local cluster of WORKERS single-threaded worker processes, and its client."""

    cluster = LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                           dashboard_address=None, silence_logs=logging.ERROR)
    return cluster, Client(cluster)


def make_data(layer: CvxpyLayer, n: int, executor) -> tuple[torch.Tensor, ...]:
    """Features z (n, 5), the hidden W's decisions x (n, 8), and the seconds they took."""
    gen = torch.Generator().manual_seed(0)
    W = 2.0 * torch.randn(N_ACT, N_FEAT, generator=gen, dtype=torch.float64)
    Z = torch.randn(n, N_FEAT, generator=gen, dtype=torch.float64)
    layer.executor = executor
    start = time.perf_counter()
    with torch.no_grad():
        (X,) = layer(Z @ W.T)
    return W, Z, X, time.perf_counter() - start


def initial_W() -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    return 0.1 * torch.randn(N_ACT, N_FEAT, generator=gen, dtype=torch.float64)


def train(layer: CvxpyLayer, executor, Z, X, batch: int, steps: int) -> dict:
    """Adam on Ŵ from a fixed start and minibatch order; the record of every step."""
    layer.executor = executor
    W = initial_W().requires_grad_()
    opt = torch.optim.Adam([W], lr=LR)
    order = torch.randperm(len(Z), generator=torch.Generator().manual_seed(3))
    rec: dict = {"loss": [], "W": [], "grad": []}
    start = time.perf_counter()
    desc = "train on the cluster" if executor is not None else "train in this process"
    for step in progress(range(steps), desc=desc):
        idx = order[(step * batch) % len(Z):][:batch]
        (x,) = layer(Z[idx] @ W.T)
        loss = ((x - X[idx]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        rec["grad"].append(W.grad.clone())
        opt.step()
        rec["loss"].append(loss.item())
        rec["W"].append(W.detach().clone())
    rec["seconds"] = time.perf_counter() - start
    return rec


def held_out_loss(layer: CvxpyLayer, W: torch.Tensor, W_true: torch.Tensor, n: int) -> float:
    Z = torch.randn(n, N_FEAT, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        x, x_true = layer(Z @ W.T)[0], layer(Z @ W_true.T)[0]
    return ((x - x_true) ** 2).sum(1).mean().item()


def gaps(a: dict, b: dict, key: str) -> np.ndarray:
    """Per step: max |a − b| of a record's entries (losses are numbers)."""
    return np.array([float(torch.as_tensor(u - v).abs().max())
                     for u, v in zip(a[key], b[key], strict=True)])


def plot(cluster: dict, local: dict, diffs: dict[str, np.ndarray], seconds: dict,
         out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    ax = axes[0]
    steps = np.arange(1, len(local["loss"]) + 1)
    ax.semilogy(steps, local["loss"], color="k", lw=4, alpha=0.35, label="in this process")
    ax.semilogy(steps, cluster["loss"], "--", color="tab:orange",
                label=f"on the Dask cluster ({WORKERS} workers)")
    ax.set(xlabel="Adam step", ylabel="‖x*(Ŵz) − x‖², minibatch mean",
           title="Learning W from decisions alone")
    ax.legend()
    plot_agreement(axes[1], steps, diffs, "Adam step", "max |cluster − in-process|",
                   "Cluster against this process, step by step (0 at the bottom)")
    ax = axes[2]
    jobs = list(seconds)
    for k, (where, color) in enumerate((("cluster", "tab:orange"), ("in-process", "tab:gray"))):
        ax.bar(np.arange(len(jobs)) + 0.4 * k, [seconds[j][where] for j in jobs], 0.4,
               color=color, label=where)
    ax.set_xticks(np.arange(len(jobs)) + 0.2, jobs, fontsize=8)
    ax.set(ylabel="seconds", title=f"Wall-clock time ({WORKERS} workers / 2 CPU cores)")
    ax.legend()
    return save(fig, out, "distributed_dask")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    n, batch, steps = (4_096, 512, 8) if quick else (50_000, 2_048, 60)
    layer = decision_layer()
    cluster, client = start_cluster()
    try:
        executor = ChunkedExecutor(client.get_executor(), timeout=300)
        with get_task_stream(client) as stream:
            W_true, Z, X, data_cluster = make_data(layer, n, executor)
            on_cluster = train(layer, executor, Z, X, batch, steps)
        tasks = stream.data
        _, _, X_local, data_local = make_data(layer, n, None)
        layer.executor = executor
        initial_loss = held_out_loss(layer, initial_W(), W_true, n // 4)
        trained_loss = held_out_loss(layer, on_cluster["W"][-1], W_true, n // 4)
    finally:
        layer.executor = None
        client.close()
        cluster.close()
    local = train(layer, None, Z, X, batch, steps)
    diffs = {"loss": gaps(on_cluster, local, "loss"),
             "gradient of Ŵ": gaps(on_cluster, local, "grad"),
             "Ŵ after the step": gaps(on_cluster, local, "W")}
    seconds = {f"data: {n:,} QPs": {"cluster": data_cluster, "in-process": data_local},
               f"training: {steps} x {batch:,} QPs": {"cluster": on_cluster["seconds"],
                                                      "in-process": local["seconds"]}}
    metrics = {
        "max data difference (cluster vs in-process)": (X - X_local).abs().max().item(),
        "max loss difference": float(diffs["loss"].max()),
        "max gradient difference": float(diffs["gradient of Ŵ"].max()),
        "max parameter difference": float(diffs["Ŵ after the step"].max()),
        "held-out loss, initial": initial_loss,
        "held-out loss, trained": trained_loss,
        "first training loss": local["loss"][0],
        "final training loss": local["loss"][-1],
        "chunks solved on the cluster": len(tasks),
        "workers that solved chunks": len({t["worker"] for t in tasks}),
        **{f"seconds, {job}, {where}": t for job, times in seconds.items()
           for where, t in times.items()},
    }
    path = plot(on_cluster, local, diffs, seconds, out)
    report(f"Dask cluster, {WORKERS} workers (figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
