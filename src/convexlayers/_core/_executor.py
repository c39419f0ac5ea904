"""A batch split into chunks and solved by a ``concurrent.futures.Executor``.

Each chunk's task carries the compiled program, the backend, its settings and the
adjoint (pickled once per call, unpickled once per worker and call), and the rows of
the parameter values and of whatever else the work needs (solver state, cotangents);
never the CVXPY problem. The work is :mod:`._kernel`'s, the same as in this process.
A task that fails (a worker that died, a package missing on the worker) raises
:class:`~convexlayers.ExecutorError` naming the batch elements of its chunk.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import math
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from convexlayers._errors import ConvexLayersError, ExecutorError, SolverArgumentError

# Rows per chunk when not given: enough that a task's overhead (pickling, scheduling:
# about a millisecond in a process pool, a few on a Dask cluster) is small beside its
# solves (0.1 to 1 ms each), and enough chunks to keep every worker busy to the end.
MIN_CHUNK, CHUNKS = 128, 64


@dataclass(frozen=True)
class ChunkedExecutor:
    """How a layer hands its batches to an executor.

    Args:
        executor: a ``concurrent.futures.Executor``: ``ProcessPoolExecutor``, a Dask
            ``Client(...).get_executor()``, Ray's ``RayExecutor``, a thread pool, ...
        chunk_size: batch elements per task (default: B / 64, at least 128). A batch of
            at most one chunk is solved in this process.
        timeout: seconds to wait for each chunk before giving up with
            :class:`~convexlayers.ExecutorError` (default: no limit; a cluster whose
            workers are all lost would otherwise wait for new ones).
    """

    executor: cf.Executor
    chunk_size: int | None = None
    timeout: float | None = None

    def __post_init__(self) -> None:
        if not callable(getattr(self.executor, "submit", None)):
            raise SolverArgumentError(
                f"executor: expected a concurrent.futures.Executor (an object with "
                f"submit()), received {type(self.executor).__name__}; pass e.g. a "
                "ProcessPoolExecutor or a Dask client's get_executor()."
            )
        size = self.chunk_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 1):
            raise SolverArgumentError(
                f"chunk_size: expected a positive integer, received {size!r}."
            )
        if self.timeout is not None and not self.timeout > 0:
            raise SolverArgumentError(
                f"timeout: expected a positive number of seconds or None, received "
                f"{self.timeout!r}."
            )

    def bounds(self, batch: int) -> list[tuple[int, int]]:
        """(start, stop) of each chunk of a batch of ``batch`` rows."""
        size = self.chunk_size or max(MIN_CHUNK, math.ceil(batch / CHUNKS))
        return [(lo, min(lo + size, batch)) for lo in range(0, batch, size)]


class RayExecutor(cf.Executor):
    """Ray tasks behind the ``concurrent.futures`` interface, for ``executor=``.

    Start Ray first (``ray.init()``, or ``ray.init(address=...)`` for a cluster). Each
    chunk is one Ray task; Ray retries a task whose worker died (``max_retries``) and
    then raises, which the layer reports as :class:`~convexlayers.ExecutorError`.

    Args:
        **options: options of ``ray.remote`` for the tasks (``num_cpus``,
            ``max_retries``, ``resources``, ...).
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._remote: Any = None

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> cf.Future:
        if self._remote is None:
            import ray

            self._remote = ray.remote(**self.options)(_call) if self.options else \
                ray.remote(_call)
        return self._remote.remote(fn, *args, **kwargs).future()


def _call(fn: Callable, *args: Any, **kwargs: Any) -> Any:
    return fn(*args, **kwargs)


class HasExecutor:
    """Mixin of the framework layers: ``layer.executor``, read and set on its map."""

    _map: Any

    @property
    def executor(self) -> ChunkedExecutor | None:
        """Where batches are solved: None (this process) or a :class:`ChunkedExecutor`;
        set an Executor, a ChunkedExecutor or None."""
        return self._map.executor

    @executor.setter
    def executor(self, executor: Any) -> None:
        self._map.executor = executor


def as_chunked(executor: Any) -> ChunkedExecutor | None:
    """None, an Executor or a :class:`ChunkedExecutor` -> a ChunkedExecutor or None."""
    if executor is None or isinstance(executor, ChunkedExecutor):
        return executor
    return ChunkedExecutor(executor)


# -- the worker's side --------------------------------------------------------------
_LOADED: OrderedDict[bytes, Any] = OrderedDict()
_LOCK = threading.Lock()


def _load(payload: bytes) -> Any:
    """Unpickle a call's shared payload once per worker (a few recent ones are kept)."""
    key = hashlib.blake2b(payload, digest_size=16).digest()
    with _LOCK:
        if key in _LOADED:
            _LOADED.move_to_end(key)
            return _LOADED[key]
    value = pickle.loads(payload)
    with _LOCK:
        _LOADED[key] = value
        while len(_LOADED) > 4:
            _LOADED.popitem(last=False)
    return value


def _task(work: Callable, payload: bytes, rows: Sequence[Any]) -> Any:
    return work(*_load(payload), *rows)


# -- the caller's side --------------------------------------------------------------
def run_chunked(chunked: ChunkedExecutor, work: Callable, shared: tuple,
                rows: Sequence[Any]) -> list[Any]:
    """``work(*shared, *chunk_rows)`` for each chunk of ``rows`` (arrays, or tuples of
    arrays, sliced along their first axis; None passes as None); results in order.

    Raises:
        ExecutorError: a chunk's task failed or timed out (the others are cancelled).
    """
    batch = next(len(r[0] if isinstance(r, tuple) else r) for r in rows if r is not None)
    bounds = chunked.bounds(batch)
    if len(bounds) <= 1:
        return [work(*shared, *rows)]
    payload = pickle.dumps(shared, protocol=pickle.HIGHEST_PROTOCOL)
    futures: list[cf.Future] = []
    try:
        for lo, hi in bounds:
            futures.append(_submit(chunked.executor, work, payload, rows, lo, hi))
        return [_result(f, lo, hi, chunked.timeout) for f, (lo, hi) in zip(futures, bounds,
                                                                          strict=True)]
    finally:
        for f in futures:
            f.cancel()


def _submit(executor: cf.Executor, work: Callable, payload: bytes, rows: Sequence[Any],
            lo: int, hi: int) -> cf.Future:
    try:
        return executor.submit(_task, work, payload, _slice(rows, lo, hi))
    except Exception as err:  # a pool already broken or shut down, a closed client
        raise ExecutorError(
            f"executor: could not hand batch elements {lo}..{hi - 1} to the executor "
            f"({type(err).__name__}: {err}); it may be shut down or broken by a lost "
            "worker. Make a new one, or call without an executor.", range(lo, hi)) from err


def _slice(rows: Sequence[Any], lo: int, hi: int) -> list[Any]:
    def cut(r):
        if r is None:
            return None
        return tuple(a[lo:hi] for a in r) if isinstance(r, tuple) else r[lo:hi]
    return [cut(r) for r in rows]


def _result(future: cf.Future, lo: int, hi: int, timeout: float | None) -> Any:
    try:
        return future.result(timeout=timeout)
    except ConvexLayersError:
        raise
    except (TimeoutError, cf.TimeoutError) as err:
        raise ExecutorError(
            f"executor: batch elements {lo}..{hi - 1} were not solved within {timeout} s "
            "(ChunkedExecutor's timeout); the cluster may have lost its workers. Check "
            "the cluster, or raise the timeout.", range(lo, hi)) from err
    except Exception as err:  # whatever the executor raises for a lost task
        raise ExecutorError(
            f"executor: the task solving batch elements {lo}..{hi - 1} failed "
            f"({type(err).__name__}: {err}). A worker may have died (out of memory, "
            "killed), or lacks convexlayers or a solver; the call is abandoned. Check "
            "the workers, or call without an executor.", range(lo, hi)) from err


def concat(parts: Sequence[np.ndarray]) -> np.ndarray:
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
