"""Solving the elements of a batch, on several threads when the solver allows it.

Only backends that release the GIL while solving (``releases_gil``) gain from
threads; for the others the batch is solved in a plain loop. The number of
threads is the number of CPUs this process may run on (its affinity mask, which
also reflects taskset/cgroup pinning), or ``CONVEXLAYERS_NUM_THREADS`` if set.
The batch is cut into blocks of consecutive elements, their size fixed by the batch's
(at most ``BLOCK``, and at least four blocks when the batch allows it) whatever the
number of threads; a thread takes the next unsolved block when it is free (elements differ in
cost) and solves its elements one after another with a fresh
:meth:`~convexlayers.solvers.AbstractSolver.sequence`. What a sequence keeps between
elements (Clarabel's solver object, whose scaling was computed on an earlier element)
can change the last bits of an answer, so blocks fixed by position keep answers the
same on any number of threads.
"""

from __future__ import annotations

import os
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
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


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
    size = min(BLOCK, max(1, len(data) // 4))
    blocks = range(0, len(data), size)
    queue = iter(blocks)  # shared by the threads; next() on it is atomic

    def work() -> None:
        for start in queue:
            one = backend.sequence(structure, settings)
            for b in range(start, min(start + size, len(data))):
                results[b] = one(data[b], starts[b])

    workers = min(num_threads(), len(blocks))
    if backend.releases_gil and workers > 1:
        for future in [_pool(workers).submit(work) for _ in range(workers)]:
            future.result()
    else:
        work()
    return results  # type: ignore[return-value]


def _rows(warm: tuple[np.ndarray, ...]):
    for point in zip(*warm, strict=True):
        yield point if all(np.isfinite(v).all() for v in point) else None
