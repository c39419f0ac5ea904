"""Clarabel backend (the default, except where the automatic choice picks NATIVE).

Clarabel's cone conventions are ours: ``PSDTriangleConeT`` is the upper triangle
in column-major order with off-diagonals scaled by sqrt(2), and its exponential
and power cones have our orientation, so rows pass through unchanged.

This module imports :mod:`clarabel`; the registry in :mod:`convexlayers.solvers`
imports it only when the backend is first asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import clarabel
import numpy as np
import scipy.sparse as sp

from convexlayers._errors import SolverArgumentError
from convexlayers.cones import ConeDims
from convexlayers.solvers._base import (
    AbstractSolver,
    ConeProgram,
    ElementSolver,
    SolveResult,
    SolverStatus,
    WarmPoint,
)

_STATUS = {
    "Solved": SolverStatus.OPTIMAL,
    "AlmostSolved": SolverStatus.OPTIMAL_INACCURATE,
    "PrimalInfeasible": SolverStatus.INFEASIBLE,
    "AlmostPrimalInfeasible": SolverStatus.INFEASIBLE_INACCURATE,
    "DualInfeasible": SolverStatus.UNBOUNDED,
    "AlmostDualInfeasible": SolverStatus.UNBOUNDED_INACCURATE,
    "MaxIterations": SolverStatus.MAX_ITERATIONS,
    "MaxTime": SolverStatus.TIME_LIMIT,
    "NumericalError": SolverStatus.NUMERICAL_ERROR,
    "InsufficientProgress": SolverStatus.NUMERICAL_ERROR,
}

# Tolerances set by the cvxpylayers key ``eps``.
_EPS_KEYS = ("tol_gap_abs", "tol_gap_rel", "tol_feas", "tol_infeas_abs", "tol_infeas_rel")


def _settings_fields() -> frozenset[str]:
    defaults = clarabel.DefaultSettings()
    return frozenset(
        name
        for name in dir(defaults)
        if not name.startswith("_") and not callable(getattr(defaults, name))
    )


def _settings_kinds(fields: frozenset[str]) -> dict[str, str]:
    """Kinds of the Clarabel settings whose range Clarabel itself does not check."""
    kinds = {k: "positive number" for k in fields if k.startswith(("tol_", "reduced_tol_"))}
    return {**kinds, "max_iter": "nonnegative int", "time_limit": "nonnegative number"}


@functools.cache
def _cones(dims: ConeDims) -> tuple[Any, ...]:
    """Clarabel's cone descriptors for ``dims``, built once per layer (they are values)."""
    cones: list[Any] = []
    if dims.zero:
        cones.append(clarabel.ZeroConeT(dims.zero))
    if dims.nonneg:
        cones.append(clarabel.NonnegativeConeT(dims.nonneg))
    cones.extend(clarabel.SecondOrderConeT(k) for k in dims.soc)
    cones.extend(clarabel.PSDTriangleConeT(k) for k in dims.psd)
    cones.extend(clarabel.ExponentialConeT() for _ in range(dims.exp))
    cones.extend(clarabel.PowerConeT(a) for a in dims.power)
    return tuple(cones)


class ClarabelSolver(AbstractSolver):
    """Interior-point solver Clarabel: every cone kind, quadratic objectives."""

    name = "CLARABEL"
    supports_quadratic_objective = True
    supported_cones = frozenset({"zero", "nonneg", "soc", "psd", "exp", "power"})
    native_keys = _settings_fields()
    native_kinds = _settings_kinds(native_keys)
    releases_gil = True  # measured: a batch of 16 QPs runs 1.7x faster on 2 threads

    def _translate(self, compat: Mapping[str, Any]) -> dict[str, Any]:
        native: dict[str, Any] = {}
        if "eps" in compat:
            native.update(dict.fromkeys(_EPS_KEYS, compat["eps"]))
        if "max_iters" in compat:
            native["max_iter"] = compat["max_iters"]
        if "verbose" in compat:
            native["verbose"] = compat["verbose"]
        return native

    def _check_native(self, native: Mapping[str, Any]) -> None:
        """Set each value on a ``DefaultSettings`` (type checks), then set up a 1-variable
        problem with them (Clarabel checks choices such as ``direct_solve_method`` there)."""
        if not native:
            return
        options = clarabel.DefaultSettings()
        for key, value in native.items():
            try:
                setattr(options, key, value)
            except (TypeError, ValueError, AttributeError, OverflowError) as err:
                hint = " (a nonnegative integer)" if isinstance(err, OverflowError) else ""
                raise SolverArgumentError(
                    f"solver_args[{key!r}]: CLARABEL rejects {value!r} "
                    f"({type(value).__name__}){hint}: {err}."
                ) from err
        options.verbose = False
        try:
            clarabel.DefaultSolver(
                sp.csc_array((1, 1)), np.zeros(1), sp.csc_array((0, 1)), np.zeros(0), [], options
            )
        except Exception as err:  # Clarabel raises a bare Exception("Bad settings: ...")
            raise SolverArgumentError(
                f"solver_args: CLARABEL rejects the settings {dict(native)}: {err}. See "
                "clarabel.DefaultSettings for the valid values."
            ) from err

    def solve(self, program: ConeProgram, settings: Mapping[str, Any],
              warm: WarmPoint | None = None) -> SolveResult:
        """Solve ``program`` with Clarabel; ``settings`` are DefaultSettings fields."""
        self.check_program(program)
        return _result(_setup(program, _options(settings)).solve())

    def sequence(self, structure: Any, settings: Mapping[str, Any]) -> ElementSolver:
        """Elements one after another on one Clarabel solver object, its data replaced
        through Clarabel's update API (no setup, no symbolic factorization) while the
        element's scale stays near the one the solver was set up on; see
        :class:`_Reuse`."""
        return _Reuse(self, structure, _options(settings))


def _options(settings: Mapping[str, Any]) -> Any:
    options = clarabel.DefaultSettings()
    options.verbose = False
    for key, value in settings.items():
        try:
            setattr(options, key, value)
        except (TypeError, ValueError, AttributeError) as err:
            raise SolverArgumentError(
                f"solver_args[{key!r}] = {value!r} rejected by Clarabel: {err}"
            ) from err
    return options


def _setup(program: ConeProgram, options: Any) -> Any:
    n = program.n
    # Clarabel takes SciPy's csc_array as it is: no conversion per element.
    P = sp.csc_array((n, n)) if program.P is None else program.P
    return clarabel.DefaultSolver(
        P,
        np.array(program.q, dtype=np.float64),
        program.A,
        np.array(program.b, dtype=np.float64),
        list(_cones(program.dims)),
        options,
    )


def _result(solution: Any) -> SolveResult:
    message = str(solution.status)
    status = _STATUS.get(message, SolverStatus.UNKNOWN)
    x = y = s = None
    if status.has_iterate:
        x = np.array(solution.x, dtype=np.float64)
        y = np.array(solution.z, dtype=np.float64)
        s = np.array(solution.s, dtype=np.float64)
    return SolveResult(
        x=x,
        y=y,
        s=s,
        status=status,
        iterations=int(solution.iterations),
        solve_time=float(solution.solve_time),
        message=message,
    )


# An element reuses the solver object set up on an earlier one while the largest |entry|
# of each column (of P and A), of each row of A and of q are all within this factor of
# that element's (as log2): Clarabel's update keeps the equilibration it computed at
# setup, and a far scale costs iterations (measured: elements scaled over 1e-2..1e2 in
# a batch of 32 took up to 30% more iterations on one solver object, none at 4x).
_LOG2_FACTOR = 2.0
# Clarabel's presolve drops rows with |b| at least this; such an element is set up anew.
_INF_BOUND = 1e20


# Statuses a reused solver object's answer is kept with; any other (a numerical error, an
# iteration limit) is solved again on a fresh object: measured on an equality-only LP
# (20 variables, condition number 2e2), an element failing with a numerical error after
# an update solved exactly when set up anew.
_SETTLED = frozenset({SolverStatus.OPTIMAL, SolverStatus.INFEASIBLE, SolverStatus.UNBOUNDED})


class _Reuse:
    """Solves elements one after another (:meth:`ClarabelSolver.sequence`)."""

    def __init__(self, backend: ClarabelSolver, structure: Any, options: Any) -> None:
        self.backend, self.structure, self.options = backend, structure, options
        self.solver: Any = None
        self.scale = np.zeros(0)
        A, P = structure.A, structure.P
        # Per value of (P, A): the column it counts in (P's upper entry (i, j) in both i
        # and j), and A's values' rows.
        self.cols = np.concatenate([[] if P is None else P.cols, A.cols,
                                    [] if P is None else P.rows]).astype(np.int64)
        self.rows = A.rows

    def _scale(self, p_vals: np.ndarray, q: np.ndarray, a_vals: np.ndarray) -> np.ndarray:
        """log2 of the largest |entry| per column, per row of A, and of q."""
        n, m = self.structure.n, self.structure.m
        cols, rows = np.zeros(n), np.zeros(m)
        np.maximum.at(cols, self.cols, np.abs(np.concatenate([p_vals, a_vals, p_vals])))
        np.maximum.at(rows, self.rows, np.abs(a_vals))
        big = np.concatenate([cols, rows, [np.abs(q).max(initial=0.0)]])
        return np.log2(np.maximum(big, np.finfo(float).tiny))

    def __call__(self, row: np.ndarray, warm: WarmPoint | None = None) -> SolveResult:
        p_vals, q, a_vals, b = self.structure.split(row)
        scale = self._scale(p_vals, q, a_vals)
        near = self.solver is not None and np.abs(scale - self.scale).max() <= _LOG2_FACTOR
        if near and np.abs(b).max(initial=0.0) < _INF_BOUND:
            values = {"q": q, "A": a_vals, "b": b}
            if self.structure.P is not None:
                values["P"] = p_vals
            self.solver.update(**values)
            result = _result(self.solver.solve())
            if result.status not in _SETTLED:  # the reused object may be what failed
                fresh = _result(_setup(self.structure.program(row), self.options).solve())
                result = fresh if fresh.status in _SETTLED else result
            return result
        program = self.structure.program(row)
        self.backend.check_program(program)
        solver = _setup(program, self.options)
        result = _result(solver.solve())
        if solver.is_data_update_allowed():  # else the previous object stays in use
            self.solver, self.scale = solver, scale
        return result
