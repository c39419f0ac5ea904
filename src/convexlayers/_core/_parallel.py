"""Solving the elements of a batch, on several threads when the solver allows it.

Only backends that release the GIL while solving (``releases_gil``) gain from
threads; for the others the batch is solved in a plain loop.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any

from convexlayers.solvers._base import AbstractSolver, ConeProgram, SolveResult


@cache
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                              thread_name_prefix="convexlayers")


def solve_all(
    backend: AbstractSolver, programs: Sequence[ConeProgram], settings: Mapping[str, Any]
) -> list[SolveResult]:
    """Solve every program with ``backend``; results in the programs' order."""
    if backend.releases_gil and len(programs) > 1 and (os.cpu_count() or 1) > 1:
        return list(_pool().map(lambda prog: backend.solve(prog, settings), programs))
    return [backend.solve(prog, settings) for prog in programs]
