"""Solving the elements of a batch, on several threads when the solver allows it.

Only backends that release the GIL while solving (``releases_gil``) gain from
threads; for the others the batch is solved in a plain loop. The number of
threads is the number of CPUs this process may run on (its affinity mask, which
also reflects taskset/cgroup pinning), or ``CONVEXLAYERS_NUM_THREADS`` if set.
The batch is cut into blocks of consecutive elements, their size fixed by the batch's
and the machine's CPUs (at most ``BLOCK``, and at least one block per CPU, up to
``BLOCK`` blocks, when the batch allows it: each block pays one solver setup) whatever
the number of threads; a thread takes the next unsolved block when it is free (elements differ in
cost) and solves its elements one after another with a fresh
:meth:`~convexlayers.solvers.AbstractSolver.sequence`. What a sequence keeps between
elements (Clarabel's solver object, whose scaling was computed on an earlier element)
can change the last bits of an answer, so blocks fixed by position keep answers the
same on any number of threads. When an element raises, the other threads take no new
block, and the error of the earliest failing block is raised.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np

from convexlayers.solvers._base import AbstractSolver, SolveResult

ENV_THREADS = "CONVEXLAYERS_NUM_THREADS"
BLOCK = 8


def num_threads() -> int:
    """Threads used to solve a batch (at least 1)."""
    value = os.environ.get(ENV_THREADS)
    if value:
        try:
            return max(1, int(value))
        except ValueError as err:
            raise ValueError(
                f"{ENV_THREADS}={value!r}: expected a positive integer number of threads."
            ) from err
    return _cpus()


def _cpus() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def block_size(batch: int) -> int:
    """Elements per block: at most ``BLOCK``, and at least one block per CPU (up to
    ``BLOCK`` blocks) when the batch allows. It depends on the machine, not on the
    number of threads asked for, so that answers do not."""
    return min(BLOCK, max(1, batch // min(BLOCK, _cpus())))


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convexlayers")


def solve_all(
    backend: AbstractSolver, structure: Any, data: np.ndarray, settings: Mapping[str, Any],
    warm: tuple[np.ndarray, ...] | None = None,
) -> list[SolveResult]:
    """Solve every row of ``data`` (B, nd), laid out as ``structure``, with ``backend``;
    results in the rows' order.

    ``warm``: (x, y, s) starting points, one row per element (a row with NaN: none).
    """
    starts = [None] * len(data) if warm is None else list(_rows(warm))
    results: list[SolveResult | None] = [None] * len(data)
    size = block_size(len(data))
    blocks = _Blocks(len(data), size)

    def work() -> None:
        for start in blocks:
            try:
                one = backend.sequence(structure, settings)
                for b in range(start, min(start + size, len(data))):
                    results[b] = one(data[b], starts[b])
            except BaseException as err:
                blocks.stop()  # the other threads take no new block
                raise _Failed(start, err) from err

    workers = min(num_threads(), blocks.count)
    if backend.releases_gil and workers > 1:
        futures = [_pool(workers).submit(work) for _ in range(workers)]
        try:
            cf.wait(futures)
        finally:
            blocks.stop()
        failed = [e for f in futures if isinstance(e := f.exception(), _Failed)]
        if failed:  # the earliest block's error, whatever the threads' timing
            raise min(failed, key=lambda e: e.start).error
    else:
        try:
            work()
        except _Failed as failed:
            raise failed.error from None
    return results  # type: ignore[return-value]


class _Blocks:
    """The first elements of the blocks, handed to the threads one at a time (under a
    lock: ``next`` on a shared iterator is atomic only under the GIL) until stopped."""

    def __init__(self, batch: int, size: int) -> None:
        self.count = -(-batch // size)
        self._starts = iter(range(0, batch, size))
        self._lock = threading.Lock()
        self._stopped = False

    def __iter__(self) -> _Blocks:
        return self

    def __next__(self) -> int:
        with self._lock:
            if self._stopped:
                raise StopIteration
            return next(self._starts)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True


class _Failed(Exception):
    """The error of a block, and the block's first element."""

    def __init__(self, start: int, error: BaseException) -> None:
        super().__init__(start)
        self.start, self.error = start, error


def _rows(warm: tuple[np.ndarray, ...]):
    for point in zip(*warm, strict=True):
        yield point if all(np.isfinite(v).all() for v in point) else None
