"""Batches solved by an executor: a process pool and a real local Dask cluster.

Forward outputs, gradients, forward-mode tangents and failures (with their batch
indices) must be those of the same call in this process; a lost worker or a
stalled cluster must end the call with ExecutorError, never hang.
"""

from __future__ import annotations

import concurrent.futures as cf
import copy
import multiprocessing
import os
import pickle
import signal
import threading

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexlayers import ChunkedExecutor, ExecutorError, SolverArgumentError, SolverError
from convexlayers.torch import CvxpyLayer

BATCH, CHUNK = 40, 7  # six chunks, the last one short


@pytest.fixture(scope="module")
def pool():
    # spawn: a forked child of a process with running threads (BLAS, solver pools) can
    # deadlock; spawn and forkserver are the safe start methods for these pools.
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as ex:
        yield ex


def qp_layer(**kwargs) -> CvxpyLayer:
    n, m = 4, 6
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    objective = cp.sum_squares(A @ x - b) + 0.1 * cp.norm1(x)
    prob = cp.Problem(cp.Minimize(objective), [x >= -1, x <= 1, cp.sum(x) == 0.5])
    return CvxpyLayer(prob, [A, b], [x], **kwargs)


def exp_layer(**kwargs) -> CvxpyLayer:
    x = cp.Variable(3)
    c = cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(c @ x - cp.sum(cp.entr(x))), [cp.sum(x) == 1])
    return CvxpyLayer(prob, [c], [x], **kwargs)


def qp_params(seed: int = 0, batch: int = BATCH):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 6, 4, generator=g, dtype=torch.float64, requires_grad=True),
            torch.randn(batch, 6, generator=g, dtype=torch.float64, requires_grad=True))


def _value_and_grads(layer, params):
    (x,) = layer(*params)
    weights = torch.linspace(-1, 1, x.numel()).reshape(x.shape)
    grads = torch.autograd.grad((weights * x).sum(), params)
    return x.detach(), grads


@pytest.mark.parametrize("make, solver", [(qp_layer, None), (qp_layer, "SCS"),
                                          (exp_layer, None)])
def test_pool_matches_in_process(pool, make, solver):
    c = torch.randn(BATCH, 3, dtype=torch.float64, requires_grad=True)
    params = qp_params() if make is qp_layer else (c,)
    local = make(solver=solver)
    remote = make(solver=solver, executor=ChunkedExecutor(pool, chunk_size=CHUNK))
    x0, g0 = _value_and_grads(local, params)
    x1, g1 = _value_and_grads(remote, params)
    assert torch.allclose(x0, x1, atol=1e-10, rtol=0)
    for a, b in zip(g0, g1, strict=True):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)
    info = remote.info
    assert len(info.status) == BATCH and info.derivative is not None
    assert set(info.derivative.method) <= {"lu", "sparse_lu"}
    assert np.all(info.derivative.kkt_residual < 1e-9)


def test_pool_forward_mode(pool):
    """SolutionMap.jvp (what jax.jvp and the MLX layer call) on the workers."""
    values = [p.detach().numpy() for p in qp_params(1)]
    tangents = [np.random.default_rng(1).standard_normal(v.shape) for v in values]
    tout = []
    for layer in (qp_layer(), qp_layer(executor=ChunkedExecutor(pool, chunk_size=CHUNK))):
        sol = layer._map.solve(values)
        tout.append(layer._map.jvp(values, sol.state, tangents, "CLARABEL")[0][0])
    assert np.abs(tout[0]).max() > 1e-3
    np.testing.assert_allclose(tout[0], tout[1], atol=1e-9, rtol=0)


def test_failures_keep_their_batch_indices(pool):
    x = cp.Variable(2)
    lo = cp.Parameter(2)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x)), [x >= lo, x <= 1])
    layer = CvxpyLayer(prob, [lo], [x], executor=ChunkedExecutor(pool, chunk_size=CHUNK))
    values = torch.zeros(BATCH, 2, dtype=torch.float64)
    bad = [3, 17, 39]  # in the first, a middle and the last chunk
    values[bad] = 2.0  # x >= 2 and x <= 1: infeasible
    with pytest.raises(SolverError) as err:
        layer(values)
    assert err.value.indices == bad
    (out,) = layer(values, on_failure="nan")
    assert layer.info.failed == tuple(bad)
    assert torch.isnan(out[bad]).all()
    good = np.setdiff1d(np.arange(BATCH), bad)
    assert torch.allclose(out[good], torch.zeros(len(good), 2, dtype=torch.float64), atol=1e-9)


class _KillsOneWorker(cf.Executor):
    """A process pool whose third task is replaced by one that kills its worker."""

    def __init__(self) -> None:
        self.pool = cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
        self.count = 0

    def submit(self, fn, /, *args, **kwargs):
        self.count += 1
        if self.count == 3:
            return self.pool.submit(os._exit, 1)
        return self.pool.submit(fn, *args, **kwargs)


def test_lost_worker_raises_executor_error():
    ex = _KillsOneWorker()
    try:
        layer = qp_layer(executor=ChunkedExecutor(ex, chunk_size=CHUNK, timeout=120))
        with pytest.raises(ExecutorError, match="batch elements") as err:
            layer(*qp_params())
        assert err.value.indices  # the chunk it was solving (or the first refused)
        with pytest.raises(ExecutorError, match=r"broken|shut down|lost|died"):
            layer(*qp_params())  # the pool is broken now: a clear error at once
    finally:
        ex.pool.shutdown(wait=True, cancel_futures=True)


class _NeverDone(cf.Executor):
    """An executor whose tasks never finish (a cluster without workers)."""

    def submit(self, fn, /, *args, **kwargs):
        return cf.Future()


def test_timeout_ends_a_stalled_call():
    layer = qp_layer(executor=ChunkedExecutor(_NeverDone(), chunk_size=CHUNK, timeout=0.2))
    with pytest.raises(ExecutorError, match=r"not solved within 0\.2 s") as err:
        layer(*qp_params())
    assert err.value.indices == list(range(CHUNK))


class _Refuses(cf.Executor):
    def submit(self, fn, /, *args, **kwargs):
        raise AssertionError("a batch of one chunk must not reach the executor")


def test_batch_of_one_chunk_stays_in_process():
    layer = qp_layer(executor=ChunkedExecutor(_Refuses(), chunk_size=BATCH))
    x, grads = _value_and_grads(layer, qp_params())
    x0, g0 = _value_and_grads(qp_layer(), qp_params())
    assert torch.equal(x, x0) and all(torch.equal(a, b) for a, b in zip(grads, g0,
                                                                        strict=True))


@pytest.mark.parametrize("bad, match", [
    ("pool", "executor: expected a concurrent.futures.Executor"),
    (ChunkedExecutor, None),
])
def test_bad_executor(bad, match):
    if bad is ChunkedExecutor:
        for kwargs, msg in [({"chunk_size": 0}, "chunk_size"), ({"chunk_size": 2.5}, "chunk_size"),
                            ({"timeout": -1}, "timeout")]:
            with pytest.raises(SolverArgumentError, match=msg):
                ChunkedExecutor(cf.ThreadPoolExecutor(1), **kwargs)
        return
    with pytest.raises(SolverArgumentError, match=match):
        qp_layer(executor=bad)


def test_copies_leave_the_executor_behind(pool):
    layer = qp_layer(executor=pool)
    assert layer.executor.executor is pool
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert clone.executor is None
        x, _ = _value_and_grads(clone, qp_params())
        assert torch.isfinite(x).all()
    assert layer.executor.executor is pool
    layer.executor = None
    assert layer.executor is None


def test_jax_tensorflow_mlx_layers_take_an_executor(pool):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    from convexlayers.jax import CvxpyLayer as JaxLayer

    x = cp.Variable(3)
    c = cp.Parameter(3)
    prob = cp.Problem(cp.Minimize(c @ x + cp.sum_squares(x)), [x >= 0, cp.sum(x) == 1])
    values = np.random.default_rng(0).standard_normal((BATCH, 3))
    layers = [JaxLayer(prob, [c], [x], executor=ChunkedExecutor(pool, chunk_size=CHUNK)),
              JaxLayer(prob, [c], [x])]

    def loss(layer):
        return lambda v: (layer(v)[0] ** 3).sum()

    g = [np.asarray(jax.grad(loss(lay))(jax.numpy.asarray(values))) for lay in layers]
    np.testing.assert_allclose(g[0], g[1], atol=1e-9)


@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def test_dask_cluster_matches_in_process(dask_client):
    layer = qp_layer(executor=ChunkedExecutor(dask_client.get_executor(), chunk_size=CHUNK))
    x0, g0 = _value_and_grads(qp_layer(), qp_params(2))
    x1, g1 = _value_and_grads(layer, qp_params(2))
    assert torch.allclose(x0, x1, atol=1e-10, rtol=0)
    for a, b in zip(g0, g1, strict=True):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)


def test_dask_worker_killed_mid_call_ends(dask_client):
    """A worker killed while the batch is out: Dask reruns its tasks elsewhere (its nanny
    restarts it), so the call returns the right answer, or fails clearly; never hangs."""
    layer = qp_layer(executor=ChunkedExecutor(dask_client.get_executor(), chunk_size=4,
                                              timeout=120))
    params = qp_params(3, batch=400)
    pids = list(dask_client.run(os.getpid).values())
    threading.Timer(0.3, os.kill, (pids[0], signal.SIGKILL)).start()
    try:
        x1, _ = _value_and_grads(layer, params)
    except ExecutorError as err:
        assert err.indices
        return
    x0, _ = _value_and_grads(qp_layer(), params)
    assert torch.allclose(x0, x1, atol=1e-10, rtol=0)


# ray.init starts its processes with fork + exec; JAX (imported by other tests) warns at
# every fork, which this suite turns into errors.
@pytest.mark.filterwarnings(r"ignore:os\.fork\(\) was called:RuntimeWarning")
def test_ray_cluster_matches_in_process():
    ray = pytest.importorskip("ray")
    from convexlayers import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        layer = qp_layer(executor=ChunkedExecutor(RayExecutor(max_retries=1),
                                                  chunk_size=CHUNK, timeout=120))
        x0, g0 = _value_and_grads(qp_layer(), qp_params(4))
        x1, g1 = _value_and_grads(layer, qp_params(4))
    finally:
        ray.shutdown()
    assert torch.allclose(x0, x1, atol=1e-10, rtol=0)
    for a, b in zip(g0, g1, strict=True):
        assert torch.allclose(a, b, atol=1e-9, rtol=0)
