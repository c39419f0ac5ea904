"""Solving the elements of a batch, on several threads when the solver allows it.

Only backends that release the GIL while solving (``releases_gil``) gain from
threads; for the others the batch is solved in a plain loop. The number of
threads is the number of CPUs this process may run on (its affinity mask, which
also reflects taskset/cgroup pinning), or ``CONVEXLAYERS_NUM_THREADS`` if set.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

import numpy as np

from convexlayers.solvers._base import AbstractSolver, ConeProgram, SolveResult

ENV_THREADS = "CONVEXLAYERS_NUM_THREADS"


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
    backend: AbstractSolver, programs: Sequence[ConeProgram], settings: Mapping[str, Any],
    warm: tuple[np.ndarray, ...] | None = None,
) -> list[SolveResult]:
    """Solve every program with ``backend``; results in the programs' order.

    ``warm``: (x, y, s) starting points, one row per program (a row with NaN: none).
    """
    starts = [None] * len(programs) if warm is None else list(_rows(warm))

    def one(b: int) -> SolveResult:
        return backend.solve(programs[b], settings, starts[b])

    workers = min(num_threads(), len(programs))
    if backend.releases_gil and workers > 1:
        return list(_pool(workers).map(one, range(len(programs))))
    return [one(b) for b in range(len(programs))]


def _rows(warm: tuple[np.ndarray, ...]):
    for point in zip(*warm, strict=True):
        yield point if all(np.isfinite(v).all() for v in point) else None
