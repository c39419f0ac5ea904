"""The native backend: the whole batch solved as one array program (no per-element calls).

Zero, nonnegative, second-order and PSD cones with a quadratic objective (LPs, QPs,
SOCPs, SDPs): the batched interior-point method of :mod:`._ipm`. An element it does not
solve to tolerance (infeasible, unbounded, or badly conditioned: this method certifies
none of them) is handed to Clarabel, whose homogeneous embedding reports the right
status, so a batch never loses an element to the fast path.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from convexlayers.solvers import _ipm_compiled as compiled
from convexlayers.solvers._base import (
    AbstractSolver,
    ConeProgram,
    SolveResult,
    SolverStatus,
    WarmPoint,
)
from convexlayers.solvers._cone_ops import Cones
from convexlayers.solvers._ipm import IPMResult, solve_qp_batch
from convexlayers.solvers._presolve import presolve
from convexlayers.solvers._reduced import BatchQP, kkt_pattern

_DEFAULTS = {"tol": 1e-9, "max_iter": 50}
# Above this many unknowns in the reduced KKT system (n + equality rows) its dense
# factorization loses to Clarabel's sparse one by far (a 4,000-unknown sparse QP: 3,500x
# slower), so the batch goes to Clarabel element by element.
MAX_DENSE = 600
# The automatic choice's thresholds (see prefers_native), from benchmarks/run.py.
AUTO_DENSITY, AUTO_WORK = 0.6, 100
# Where the compiled kernel takes the call, half-dense systems suffice: the README's l1
# LP (56%) measured 1.06-2x faster there than with Clarabel at 60-180 unknowns, batches
# 1-128; an MPC at 14% 1.14x faster, at 9% level and at 5% 2x slower.
AUTO_DENSITY_COMPILED = 0.5
AUTO_CONES = frozenset({"zero", "nonneg"})
# An element whose progress stalls (a degenerate solution: the scaling W grows like
# 1/error² and its systems lose accuracy) is kept, as inaccurate, when its best point is
# this close; polishing then makes it exact. Farther ones go to Clarabel.
REDUCED_TOL = 1e-6


def batch_qp(structure: Any, data: np.ndarray) -> BatchQP:
    """Dense batched data from compiled program data (B, nd) laid out as ``structure``."""
    p_vals, q, a_vals, b = structure.split(data)
    B, n, m = data.shape[0], structure.n, structure.m
    A = np.zeros((B, m, n))
    A[:, structure.A.rows, structure.A.cols] = a_vals
    P = None
    if structure.P is not None and structure.P.rows.size:
        P = np.zeros((B, n, n))
        P[:, structure.P.rows, structure.P.cols] = p_vals
        P[:, structure.P.cols, structure.P.rows] = p_vals
    z = structure.dims.zero
    cones = Cones(structure.dims.nonneg, structure.dims.soc, structure.dims.psd)
    return BatchQP(P, q, A[:, :z], b[:, :z], A[:, z:], b[:, z:], cones)


def dense_profile(structure: Any) -> tuple[int, float] | None:
    """(unknowns, density) of the reduced KKT matrix this backend would factor for a
    program laid out as ``structure``, after presolve; None where the automatic choice
    leaves the program to Clarabel whatever the batch (cones other than ``AUTO_CONES``,
    or more than ``MAX_DENSE`` unknowns)."""
    # Second-order cones: NATIVE solves them, but measured 1.3-2.4x slower than Clarabel
    # (and its SOC scaling loses accuracy near the boundary), so they stay off the choice.
    if not structure.dims.kinds() <= AUTO_CONES or (
            structure.n + structure.dims.zero > MAX_DENSE):
        return None
    qp = batch_qp(structure, np.ones((1, sum(structure.sizes))))
    pre = presolve(qp)
    pattern, _ = kkt_pattern(qp if pre is None else pre.qp)
    return pattern.shape[0], float(pattern.mean()) if pattern.size else 0.0


def prefers_native(profile: tuple[int, float] | None, batch: int) -> bool:
    """The automatic choice (``solver=None``): NATIVE where the benchmark measured it
    faster than Clarabel, i.e. dense reduced systems of at most ``MAX_DENSE`` unknowns:
    those the compiled path takes (:func:`._ipm_compiled.fits`, with Numba) at density
    at least ``AUTO_DENSITY_COMPILED`` (dense QPs, least squares, ℓ1 fitting with a
    dense A at 56%; a 50-variable QP alone measured 1.7x faster than with Clarabel),
    others at density at least ``AUTO_DENSITY`` (without Numba the ℓ1 LP measured
    between 1.5x slower and level with Clarabel) in batches with batch × unknowns at
    least ``AUTO_WORK``; Clarabel for sparse structure (MPC at 5%, sparsemax at 3%) and
    small calls without Numba."""
    if profile is None:
        return False
    size, density = profile
    if size > MAX_DENSE:
        return False
    if compiled.fits(size):
        return density >= AUTO_DENSITY_COMPILED
    return density >= AUTO_DENSITY and batch * size >= AUTO_WORK


def _ipm(qp: BatchQP, opts: Mapping[str, Any], warm) -> IPMResult:
    """The compiled IPM where it applies (:mod:`._ipm_compiled`), else the array one."""
    if compiled.applies(qp):
        return compiled.solve_orthant_batch(qp, opts["tol"], opts["max_iter"], warm)
    return solve_qp_batch(qp, tol=opts["tol"], max_iter=opts["max_iter"], warm=warm)


def _solve(qp: BatchQP, opts: Mapping[str, Any], warm) -> IPMResult:
    """The IPM on the batch with its defined variables substituted out (:mod:`._presolve`)."""
    pre = presolve(qp)
    if pre is None:
        return _ipm(qp, opts, warm)
    res = _ipm(pre.qp, opts, None if warm is None else pre.reduce_warm(warm))
    x, yz = pre.recover(res.x, res.yz)
    return IPMResult(x, yz, res.yl, res.s, res.error, res.iterations)


class NativeSolver(AbstractSolver):
    """Batched primal-dual interior point for LPs, QPs, SOCPs and SDPs, Clarabel where it
    fails."""

    name = "NATIVE"
    supports_quadratic_objective = True
    supported_cones = frozenset({"zero", "nonneg", "soc", "psd"})
    native_keys = frozenset(_DEFAULTS)
    native_kinds: ClassVar[Mapping[str, str]] = {"tol": "positive number",
                                                 "max_iter": "positive int"}
    batched = True
    warm_starts = True

    def _translate(self, compat: Mapping[str, Any]) -> dict[str, Any]:
        native: dict[str, Any] = {}
        if "eps" in compat:
            native["tol"] = compat["eps"]
        if "max_iters" in compat:
            native["max_iter"] = compat["max_iters"]
        return native

    def solve(self, program: ConeProgram, settings: Mapping[str, Any],
              warm: WarmPoint | None = None) -> SolveResult:
        """One program: the fallback (Clarabel) with the matching tolerance."""
        from convexlayers.solvers._clarabel import ClarabelSolver

        tol = settings.get("tol", _DEFAULTS["tol"])
        fallback = {k: tol for k in ("tol_gap_abs", "tol_gap_rel", "tol_feas")}
        result = ClarabelSolver().solve(program, fallback)
        return SolveResult(result.x, result.y, result.s, result.status, result.iterations,
                           result.solve_time, f"{result.message} (Clarabel fallback)")

    def solve_batch(self, structure: Any, data: np.ndarray, settings: Mapping[str, Any],
                    warm: tuple[np.ndarray, ...] | None = None) -> list[SolveResult]:
        """Solve every element of ``data`` (B, nd) laid out as ``structure``; ``warm``:
        (x, y, s) starting points, moved inside the cone (NaN rows: the cold start)."""
        opts = {**_DEFAULTS, **settings}
        if data.shape[0] == 0:
            return []
        if structure.n + structure.dims.zero > MAX_DENSE:
            return [self.solve(structure.program(d), opts) for d in data]
        begin = time.perf_counter()
        qp = batch_qp(structure, data)
        z = structure.dims.zero
        start = None if warm is None else (warm[0], warm[1][:, :z], warm[1][:, z:],
                                           warm[2][:, z:])
        res = _solve(qp, opts, start)
        per = (time.perf_counter() - begin) / data.shape[0]
        results = []
        for b in range(data.shape[0]):
            if not res.error[b] <= max(opts["tol"], REDUCED_TOL):
                results.append(self.solve(structure.program(data[b]), opts))
                continue
            y = np.concatenate([res.yz[b], res.yl[b]])
            s = np.concatenate([np.zeros(z), res.s[b]])
            exact = res.error[b] <= opts["tol"]
            status = SolverStatus.OPTIMAL if exact else SolverStatus.OPTIMAL_INACCURATE
            message = "solved (batched IPM)" if exact else (
                f"stalled at relative error {res.error[b]:.1e} (batched IPM)")
            results.append(SolveResult(res.x[b], y, s, status, int(res.iterations[b]), per,
                                       message))
        return results
