"""Data-parallel training through the layer with DistributedDataParallel (PyTorch).

A small network reads eight features of a day and predicts the values c of six
activities; the day's plan is the allocation

    x*(c) = argmax_x  cᵀx − ½ xᵀDx   s.t.  x ≥ 0,  1ᵀx ≤ 1,  Gx ≤ 0.3  (two shared resources),

a ``CvxpyLayer``. The network learns from observed plans alone (the loss is ‖x* − x_obs‖²,
through the layer), never from the values themselves.

It is trained twice from the same initial weights with Adam: by one process on each global
minibatch, and by two processes (``torch.distributed``, gloo backend, started by
``torch.multiprocessing``) under ``DistributedDataParallel``, each rank solving and
differentiating half of every minibatch (its ``DistributedSampler`` share) before DDP
averages the gradients. The layer is an ordinary module without parameters of its own, so
nothing about it is specific to DDP; the model, layer included, reaches each rank pickled.

The two runs agree to rounding error, step by step: the all-reduced gradients, the
parameters after each step and the loss curve, and also DDP's gradient at each step's
parameters against one process's at the same parameters (the error of one step alone,
which does not accumulate).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pathlib
import pickle
import socket
import sys
import tempfile
import time

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

from _common import cli, plot_agreement, progress, report, save
from convexlayers.torch import CvxpyLayer

N_FEAT, N_ACT, WORLD, LR = 8, 6, 2, 0.02
TIMEOUT = 300  # seconds for the distributed run; the processes are killed after it


class Planner(torch.nn.Module):
    """Features -> predicted values c -> the allocation x*(c)."""

    def __init__(self) -> None:
        super().__init__()
        x, c = cp.Variable(N_ACT), cp.Parameter(N_ACT)
        rng = np.random.default_rng(1)
        D = np.diag(rng.uniform(0.5, 1.5, N_ACT))
        G = rng.uniform(0, 1, (2, N_ACT)) * (rng.uniform(size=(2, N_ACT)) < 0.6)
        objective = cp.Maximize(c @ x - 0.5 * cp.quad_form(x, D))
        constraints = [x >= 0, cp.sum(x) <= 1, G @ x <= 0.3]
        self.values = torch.nn.Sequential(torch.nn.Linear(N_FEAT, 32), torch.nn.Tanh(),
                                          torch.nn.Linear(32, N_ACT)).double()
        self.plan = CvxpyLayer(cp.Problem(objective, constraints), parameters=[c],
                               variables=[x])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.plan(self.values(features))[0]


def dataset(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Features and the plans made with the true values (a fixed nonlinear map)."""
    rng = np.random.default_rng(seed)
    X = torch.tensor(rng.standard_normal((n, N_FEAT)))
    W = torch.tensor(rng.standard_normal((N_FEAT, N_ACT)) / np.sqrt(N_FEAT))
    truth = Planner()
    with torch.no_grad():
        plans = truth.plan(0.6 + torch.sin(2 * X @ W))[0]
    return X, plans


def rank_batches(n: int, batch: int, rank: int, epoch: int) -> list[torch.Tensor]:
    """Row indices of one rank's minibatches in one epoch: its DistributedSampler share."""
    sampler = DistributedSampler(range(n), num_replicas=WORLD, rank=rank, shuffle=True,
                                 seed=0, drop_last=True)
    sampler.set_epoch(epoch)
    return list(torch.tensor(list(sampler)).split(batch // WORLD))[: n // batch]


def train(model, X, Y, batch: int, epochs: int, rank: int | None = None) -> dict:
    """Adam on ‖x* − x_obs‖², averaged over each minibatch; a record of every step.

    ``rank=None``: one process, on each global minibatch (the union of the ranks' shares).
    Otherwise ``model`` is wrapped in DDP and trains on this rank's share; the loss
    recorded is the global one (the ranks' local losses, all-reduced). Step t records the
    parameters θ_t it starts from, the gradient at θ_t (after DDP's all-reduce) and the rows.
    """
    net = model if rank is None else DistributedDataParallel(model)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    record = {"loss": [], "grad": [], "params": [], "rows": []}
    loop = range(epochs) if rank is not None else progress(range(epochs), "one process")
    for epoch in loop:
        shares = [rank_batches(len(X), batch, r, epoch) for r in range(WORLD)]
        steps = zip(*shares, strict=True) if rank is None else ([b] for b in shares[rank])
        for parts in steps:
            rows = torch.cat(list(parts))
            record["params"].append(flat(model.parameters()))
            loss = loss_fn(net, X[rows], Y[rows])
            optimizer.zero_grad()
            loss.backward()
            record["grad"].append(flat(p.grad for p in model.parameters()))
            optimizer.step()
            if rank is not None:
                loss = loss.detach().clone()
                dist.all_reduce(loss)
                loss /= WORLD
            record["loss"].append(loss.item())
            record["rows"].append(rows)
    record["final"] = flat(model.parameters())
    return record


def loss_fn(net, X, Y) -> torch.Tensor:
    return ((net(X) - Y) ** 2).sum(dim=1).mean()


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


def fresh_step_gaps(model, X, Y, single: dict, rank: dict) -> np.ndarray:
    """Per step: DDP's all-reduced gradient at its own θ_t against one process's gradient
    of the whole minibatch at that same θ_t (no accumulated drift, only that step's)."""
    gaps = []
    for theta, grad, rows in zip(rank["params"], rank["grad"], single["rows"], strict=True):
        torch.nn.utils.vector_to_parameters(theta, model.parameters())
        g = torch.autograd.grad(loss_fn(model, X[rows], Y[rows]), list(model.parameters()))
        gaps.append((flat(g) - grad).abs().max().item())
    return np.array(gaps)


def rank_main(rank: int, blob: bytes, X, Y, batch: int, epochs: int, folder: str) -> None:
    """One process of the distributed run (started by ``torch.multiprocessing``)."""
    dist.init_process_group("gloo", rank=rank, world_size=WORLD,
                            timeout=datetime.timedelta(seconds=60))
    try:
        model = pickle.loads(blob)  # the model, its convex layer included, as sent
        record = train(model, X, Y, batch, epochs, rank=rank)
        torch.save(record, pathlib.Path(folder) / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Gloo's destructors can wait forever for a peer that has already exited; the record
    # is saved, so the rank leaves without running them.
    sys.stdout.flush()
    os._exit(0)


@contextlib.contextmanager
def distributed_env():
    """The rendezvous (a free local port) and one thread per rank, for the children only."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CONVEXLAYERS_NUM_THREADS": "1"}
    if sys.platform == "linux":  # gloo's own pick of an interface may be unreachable
        env["GLOO_SOCKET_IFNAME"] = "lo"
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def train_ddp(model, X, Y, batch: int, epochs: int) -> list[dict]:
    """Train with DDP in ``WORLD`` local processes; every rank's record."""
    with tempfile.TemporaryDirectory() as folder, distributed_env():
        args = (pickle.dumps(model), X, Y, batch, epochs, folder)
        context = mp.start_processes(rank_main, args=args, nprocs=WORLD, join=False,
                                     start_method="spawn")
        deadline = time.monotonic() + TIMEOUT
        while not context.join(timeout=1.0):  # raises if a rank failed
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                    process.join()
                raise TimeoutError(f"the distributed run did not finish in {TIMEOUT} s")
        return [torch.load(pathlib.Path(folder) / f"rank{r}.pt") for r in range(WORLD)]


def data_loss(model, theta: torch.Tensor, X, Y) -> float:
    """The loss over the whole data set with parameters θ."""
    torch.nn.utils.vector_to_parameters(theta, model.parameters())
    with torch.no_grad():
        return loss_fn(model, X, Y).item()


def after(record: dict) -> list[torch.Tensor]:
    """The parameters after each step."""
    return [*record["params"][1:], record["final"]]


def max_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> np.ndarray:
    """Per step: the largest absolute difference between two records."""
    return np.array([(u - v).abs().max().item() for u, v in zip(a, b, strict=True)])


def plot(single: dict, ranks: list[dict], gaps: dict[str, np.ndarray], out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    ax = axes[0]
    steps = np.arange(1, len(single["loss"]) + 1)
    ax.semilogy(steps, single["loss"], color="k", lw=4, alpha=0.35, label="one process")
    ax.semilogy(steps, ranks[0]["loss"], "--", color="tab:orange",
                label=f"DDP, {WORLD} processes (all-reduced loss)")
    ax.set(xlabel="optimizer step", ylabel="‖x* − x_obs‖², minibatch mean",
           title="Training curves")
    ax.legend()
    plot_agreement(axes[1], steps, gaps, "optimizer step", "max |DDP − one process|",
                   "DDP against one process, step by step")
    return save(fig, out, "ddp_training")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    torch.manual_seed(0)
    n, batch, epochs = (64, 16, 2) if quick else (512, 32, 12)
    X, Y = dataset(n)
    model = Planner()
    start = time.perf_counter()
    ranks = train_ddp(model, X, Y, batch, epochs)  # on copies: `model` is still untrained
    ddp_seconds = time.perf_counter() - start
    start = time.perf_counter()
    single = train(model, X, Y, batch, epochs)
    single_seconds = time.perf_counter() - start
    one_step = "gradient at the same θ_t (one step)"
    gaps = {one_step: fresh_step_gaps(model, X, Y, single, ranks[0]),
            "gradients along the two runs": np.max(
                [max_gap(r["grad"], single["grad"]) for r in ranks], axis=0),
            "parameters along the two runs": np.max(
                [max_gap(after(r), after(single)) for r in ranks], axis=0)}
    metrics = {
        "max one-step gradient difference": float(gaps[one_step].max()),
        "max gradient difference": float(gaps["gradients along the two runs"].max()),
        "max parameter difference": float(gaps["parameters along the two runs"].max()),
        "max loss difference": float(np.abs(np.subtract(ranks[0]["loss"], single["loss"])).max()),
        "max difference between the ranks' parameters": float(
            max_gap(after(ranks[0]), after(ranks[1])).max()),
        "max parameter change in training": (single["final"]
                                             - single["params"][0]).abs().max().item(),
        "loss on all data, initial": data_loss(model, single["params"][0], X, Y),
        "loss on all data, trained": data_loss(model, single["final"], X, Y),
        "optimizer steps": len(single["loss"]),
        "seconds, DDP (with process start)": ddp_seconds,
        "seconds, one process": single_seconds,
    }
    path = plot(single, ranks, gaps, out)
    report(f"DDP training, {WORLD} processes (figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
