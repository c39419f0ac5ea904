"""Distributed training: the layer under torch DDP and under a JAX batch sharding.

Torch: two local processes (gloo) each train on half of a global batch through a
``CvxpyLayer`` under ``DistributedDataParallel``; their all-reduced gradients and their
parameters after a few SGD steps must equal those of one process that trains on the
whole batch (to 1e-10 in float64). The workers are this file run as a script, so the
processes are plain subprocesses with a deadline: a hang fails the test, never blocks it.

JAX: in a fresh interpreter with two host devices (``XLA_FLAGS`` must precede the import
of jax), a jitted loss and its gradient through the layer, with the batch sharded over a
two-device mesh, equal the unsharded ones; so do those of ``jax.shard_map``, in which each
device solves its own shard.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers.torch import CvxpyLayer

N_VAR, N_INEQ, N_FEAT = 4, 6, 5
BATCH, STEPS, LR = 16, 3, 0.5
TIMEOUT = 90  # seconds for both workers together; a run takes a few
SINGLE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                 "CONVEXLAYERS_NUM_THREADS": "1"}


class Model(torch.nn.Module):
    """Features -> (q, h) of  min ½‖x‖² + qᵀx  s.t.  Gx ≤ h  (G fixed) -> the solution x."""

    def __init__(self) -> None:
        super().__init__()
        rng = np.random.default_rng(7)
        x, q, h = cp.Variable(N_VAR), cp.Parameter(N_VAR), cp.Parameter(N_INEQ)
        G = rng.standard_normal((N_INEQ, N_VAR))
        problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [G @ x <= h])
        self.G = torch.as_tensor(G)
        self.linear = torch.nn.Linear(N_FEAT, N_VAR + N_INEQ, dtype=torch.float64)
        self.qp = CvxpyLayer(problem, parameters=[q, h], variables=[x])

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        raw = self.linear(features)
        q, h = raw[:, :N_VAR], 0.1 + torch.nn.functional.softplus(raw[:, N_VAR:])
        return self.qp(q, h)[0]


def loss_fn(model: torch.nn.Module, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return ((model(X) - Y) ** 2).sum(dim=1).mean()


def train(model: torch.nn.Module, X, Y, steps: int) -> tuple[list, list[float]]:
    """SGD with momentum; returns each step's gradients (after DDP's all-reduce) and losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    grads, losses = [], []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model, X, Y)
        loss.backward()
        grads.append([p.grad.detach().clone() for p in model.parameters()])
        losses.append(loss.item())
        optimizer.step()
    return grads, losses


def setup() -> dict:
    """The initial parameters and the global batch, shared by every run."""
    torch.manual_seed(0)
    model = Model()
    X = torch.randn(BATCH, N_FEAT, dtype=torch.float64)
    Y = torch.randn(BATCH, N_VAR, dtype=torch.float64)
    return {"state": model.state_dict(), "X": X, "Y": Y}


def worker(rank: int, world: int, folder: pathlib.Path) -> None:
    """One DDP rank: train on rows [rank·B/world, (rank+1)·B/world) and save the record."""
    import datetime

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        data = torch.load(folder / "setup.pt")
        model = Model()
        model.load_state_dict(data["state"])
        rows = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
        ddp = DistributedDataParallel(model)
        grads, losses = train(ddp, data["X"][rows], data["Y"][rows], STEPS)
        torch.save({"grads": grads, "losses": losses, "state": model.state_dict()},
                   folder / f"rank{rank}.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    # Gloo's destructors can wait forever for a peer that has already exited (seen once in
    # a dozen runs); the results are saved, so leave without running them.
    sys.stdout.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(folder: pathlib.Path, world: int = 2) -> list[dict]:
    """Run ``world`` worker processes to the end (or kill them at the deadline)."""
    env = {**os.environ, **SINGLE_THREAD, "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    if sys.platform == "linux":  # gloo's own pick of an interface may be unreachable
        env["GLOO_SOCKET_IFNAME"] = "lo"
    procs = [subprocess.Popen([sys.executable, __file__, str(rank), str(world), str(folder)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for rank in range(world)]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=TIMEOUT)[0])
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
        said = "\n".join(f"rank {r}: {proc.communicate()[0][-2000:]}"
                         for r, proc in enumerate(procs))
        pytest.fail(f"DDP workers did not finish within {TIMEOUT} s:\n{said}")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for rank, (proc, out) in enumerate(zip(procs, outputs, strict=True)):
        assert proc.returncode == 0, f"rank {rank} exited with {proc.returncode}:\n{out}"
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(world)]


def max_diff(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.skipif(not (torch.distributed.is_available()
                         and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_ddp_two_processes_equal_one_process(tmp_path):
    data = setup()
    torch.save(data, tmp_path / "setup.pt")
    ranks = run_ddp(tmp_path)

    model = Model()
    model.load_state_dict(data["state"])
    grads, losses = train(model, data["X"], data["Y"], STEPS)
    for step in range(STEPS):
        for rank, record in enumerate(ranks):
            diff = max_diff(record["grads"][step], grads[step])
            assert diff <= 1e-10, f"step {step}, rank {rank}: gradients differ by {diff:.2e}"
        # the mean of the ranks' local losses is the loss of the whole batch
        assert abs(np.mean([r["losses"][step] for r in ranks]) - losses[step]) <= 1e-10
    for rank, record in enumerate(ranks):
        diff = max_diff(record["state"].values(), model.state_dict().values())
        assert diff <= 1e-10, f"rank {rank}: parameters differ by {diff:.2e}"
    moved = max_diff(model.state_dict().values(), data["state"].values())
    assert moved > 1e-2, "training did not move the parameters: the comparison is empty"


def test_ddp_comparison_is_not_trivial():
    """Half a batch has another gradient, and some (not all) constraints are active."""
    data = setup()
    model = Model()
    model.load_state_dict(data["state"])
    full = torch.autograd.grad(loss_fn(model, data["X"], data["Y"]), model.parameters())
    half = torch.autograd.grad(loss_fn(model, data["X"][: BATCH // 2], data["Y"][: BATCH // 2]),
                               model.parameters())
    assert max_diff(full, half) > 1e-3
    with torch.no_grad():
        raw = model.linear(data["X"])
        h = 0.1 + torch.nn.functional.softplus(raw[:, N_VAR:])
        x = model(data["X"])
    slack = h - x @ model.G.T
    active = (slack.abs() < 1e-6).double().mean().item()
    assert 0.05 < active < 0.95, f"fraction of active constraints {active:.2f}"


# -- JAX: a batch sharded over two host devices --------------------------------------
JAX_SCRIPT = pathlib.Path(__file__).with_name("jax_sharding.py")


@pytest.fixture(scope="module")
def jax_sharded() -> dict:
    pytest.importorskip("jax")
    env = {**os.environ, **SINGLE_THREAD, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    try:
        run = subprocess.run([sys.executable, str(JAX_SCRIPT)], env=env, capture_output=True,
                             text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the JAX sharding script did not finish within {TIMEOUT} s")
    assert run.returncode == 0, run.stdout + run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def result(results: dict, key: str) -> dict:
    if "skipped" in results[key]:
        pytest.skip(results[key]["skipped"])
    assert "error" not in results[key], results[key]["error"]
    return results[key]


def test_jax_jit_with_sharded_batch(jax_sharded):
    r = jax_sharded
    assert r["devices"] == 2 and r["input shards"] == [r["batch"] // 2] * 2
    assert r["grad scale"] > 1e-2  # the gradient compared is not zero
    sharded = result(r, "jit sharded")
    assert sharded["value"] <= 1e-10
    assert sharded["grad"] <= 1e-10


def test_jax_shard_map(jax_sharded):
    half = jax_sharded["batch"] // 2
    per_device = result(jax_sharded, "shard_map")
    assert per_device["value"] <= 1e-10
    assert per_device["grad"] <= 1e-10
    # each device solved and differentiated its own half of the batch
    assert sorted(per_device["host calls"]) == [["solve", half]] * 2 + [["vjp", half]] * 2


@pytest.mark.xfail(strict=True, reason="the primitives' outputs are not typed as varying over "
                   "the mesh axes; use jax.shard_map(..., check_vma=False)")
def test_jax_shard_map_check_vma(jax_sharded):
    result(jax_sharded, "shard_map check_vma")


if __name__ == "__main__":  # a DDP worker: rank, world size, folder
    worker(int(sys.argv[1]), int(sys.argv[2]), pathlib.Path(sys.argv[3]))
