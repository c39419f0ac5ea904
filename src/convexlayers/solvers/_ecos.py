"""ECOS backend: linear objective; zero, nonnegative, second-order and exponential cones.

ECOS solves ``min cᵀx  s.t.  A x = b,  G x + s = h,  s ∈ K`` with K ordered as
nonnegative orthant, second-order cones, exponential cones. Our zero-cone rows
become (A, b) and the remaining rows (G, h), already in ECOS's order.

ECOS's exponential cone is ``{(x, y, z): z exp(x / z) <= y, z > 0}`` (closure),
so our triple ``(x, y, z)`` with ``y exp(x / y) <= z`` is ECOS's ``(x, z, y)``:
rows 1 and 2 of every exponential cone are swapped on the way in and back on
the way out. ECOS's multipliers satisfy ``c + Aᵀ y + Gᵀ z = 0``, so our dual is
``[y; z]`` (swapped back) with no change of sign.

ECOS cannot set up a program without variables; one gets a dummy variable
``t >= 0`` with cost 1 (so t = 0), removed again from the result.

This module imports :mod:`ecos`; the registry in :mod:`convexlayers.solvers`
imports it only when the backend is first asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ecos
import numpy as np
import scipy.sparse as sp

from convexlayers.cones import ConeDims
from convexlayers.solvers._base import (
    AbstractSolver,
    ConeProgram,
    SolveResult,
    SolverStatus,
    WarmPoint,
)

# ECOS exit flags (ecos.h); 10 + flag is the "close to" variant of flag.
_STATUS = {
    0: SolverStatus.OPTIMAL,
    1: SolverStatus.INFEASIBLE,
    2: SolverStatus.UNBOUNDED,
    10: SolverStatus.OPTIMAL_INACCURATE,
    11: SolverStatus.INFEASIBLE_INACCURATE,
    12: SolverStatus.UNBOUNDED_INACCURATE,
    -1: SolverStatus.MAX_ITERATIONS,
    **dict.fromkeys(range(-7, -1), SolverStatus.NUMERICAL_ERROR),
}

_SETTINGS = frozenset(
    {
        "feastol",
        "abstol",
        "reltol",
        "feastol_inacc",
        "abstol_inacc",
        "reltol_inacc",
        "max_iters",
        "nitref",
        "verbose",
    }
)


# Kinds of the settings other than the cvxpylayers keys (max_iters, verbose).
_KINDS = {
    **dict.fromkeys(
        ("feastol", "abstol", "reltol", "feastol_inacc", "abstol_inacc", "reltol_inacc"),
        "positive number",
    ),
    "nitref": "nonnegative int",
}


def row_permutation(dims: ConeDims) -> np.ndarray:
    """Our row index of each ECOS row: rows y and z of each exponential cone swapped."""
    perm = np.arange(dims.size)
    starts = dims.exp_start + 3 * np.arange(dims.exp)
    perm[starts + 1], perm[starts + 2] = starts + 2, starts + 1
    return perm


class ECOSSolver(AbstractSolver):
    """Interior-point solver ECOS: LP/SOCP/exponential cone programs, P = 0 only."""

    name = "ECOS"
    supports_quadratic_objective = False
    supported_cones = frozenset({"zero", "nonneg", "soc", "exp"})
    native_keys = _SETTINGS
    native_kinds = _KINDS

    def _translate(self, compat: Mapping[str, Any]) -> dict[str, Any]:
        native: dict[str, Any] = {}
        if "eps" in compat:
            native.update(dict.fromkeys(("abstol", "reltol", "feastol"), compat["eps"]))
        for key in ("max_iters", "verbose"):
            if key in compat:
                native[key] = compat[key]
        return native

    def solve(self, program: ConeProgram, settings: Mapping[str, Any],
              warm: WarmPoint | None = None) -> SolveResult:
        """Solve ``program`` with ECOS; ``settings`` are ecos.solve keyword arguments."""
        self.check_program(program)
        dims, m, n = program.dims, program.m, program.n
        perm = row_permutation(dims)
        pad = int(n == 0)
        rows = sp.csr_array(program.A if n else (m, 1))[perm]
        b = np.asarray(program.b, dtype=np.float64)[perm]
        c = np.array(program.q if n else [1.0], dtype=np.float64)
        G, h = sp.csc_matrix(rows[dims.zero :]), b[dims.zero :]
        cone = {"l": dims.nonneg + pad, "q": list(dims.soc), "e": dims.exp}
        if pad:
            G = sp.csc_matrix(sp.vstack([sp.csc_array(-np.ones((1, 1))), G]))
            h = np.concatenate(([0.0], h))
        eq = {}
        if dims.zero:
            eq = {"A": sp.csc_matrix(rows[: dims.zero]), "b": b[: dims.zero]}
        if G.shape[0] == 0:
            G = h = None

        result = ecos.solve(c, G, h, cone, **eq, **{"verbose": False, **settings})
        info = result["info"]
        status = _STATUS.get(int(info["exitFlag"]), SolverStatus.UNKNOWN)
        x = y = s = None
        if status.has_iterate:
            x = np.array(result["x"][:n], dtype=np.float64)
            y = np.empty(m)
            s = np.zeros(m)
            y[perm] = np.concatenate((result["y"], result["z"][pad:]))
            s[perm[dims.zero :]] = result["s"][pad:]
        return SolveResult(
            x=x,
            y=y,
            s=s,
            status=status,
            iterations=int(info["iter"]),
            solve_time=float(info["timing"]["runtime"]),
            message=str(info["infostring"]),
        )
