"""The solution map θ ↦ outputs of a compiled problem, batched, with JVP and VJP.

This is everything a layer does except talking to a framework: adapters turn
tensors into NumPy arrays, call :meth:`SolutionMap.solve`, and wire
:meth:`SolutionMap.vjp` / :meth:`SolutionMap.jvp` into their autodiff.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import cvxpy as cp
import numpy as np

from convexlayers._core._batch import BatchSpec, batch_spec, flatten
from convexlayers._core._info import DerivativeInfo, SolveInfo
from convexlayers._core._values import check_values as _check_values
from convexlayers._errors import InaccurateSolutionWarning, SolverArgumentError, SolverError
from convexlayers.compile import OutputSpec, ParametricConeProgram, ParamSpec, compile_problem
from convexlayers.derivative import AbstractLinearSolver, AutoLinearSolver, SolutionDerivative
from convexlayers.solvers import DEFAULT_SOLVER, get_solver
from convexlayers.solvers._base import AbstractSolver, SolverStatus


class SolutionMap:
    """A CVXPY problem as a batched, differentiable map from parameters to outputs.

    Args:
        problem: a DPP problem (DGP-DPP with ``gp=True``).
        parameters: exactly the problem's parameters, in the order values are passed.
        variables: variables and/or constraint dual variables to return (default: all
            variables of the problem).
        gp: parse as a log-log convex program.
        solver: backend name (default Clarabel).
        solver_args: default settings for the backend, overridable per call.
        linear_solver: strategy for the derivative's linear systems.
    """

    def __init__(
        self,
        problem: cp.Problem,
        parameters: Sequence[cp.Parameter],
        variables: Sequence[cp.Variable] | None = None,
        *,
        gp: bool = False,
        solver: str | None = None,
        solver_args: Mapping[str, Any] | None = None,
        linear_solver: AbstractLinearSolver | None = None,
    ) -> None:
        self._problem = problem
        self._parameters = parameters
        self._variables = variables
        self._gp = gp
        self.solver_args = dict(solver_args or {})
        method = self.solver_args.pop("solve_method", None)
        self.solver = get_solver(solver or method or DEFAULT_SOLVER)
        self.solver.settings(self.solver_args)  # fail now on a bad key, not at the first call
        self.linear_solver = linear_solver or AutoLinearSolver()
        self._programs: dict[tuple, ParametricConeProgram] = {}
        self.info: SolveInfo | None = None
        default = self.program(self.solver)
        self.parameters: tuple[ParamSpec, ...] = default.parameters
        self.outputs: tuple[OutputSpec, ...] = default.outputs

    def program(self, backend: AbstractSolver) -> ParametricConeProgram:
        """The problem compiled for ``backend``'s capabilities (cached)."""
        key = (backend.supports_quadratic_objective, backend.supported_cones)
        if key not in self._programs:
            self._programs[key] = compile_problem(
                self._problem,
                self._parameters,
                self._variables,
                gp=self._gp,
                quadratic=backend.supports_quadratic_objective,
                cones=backend.supported_cones,
                solver=backend.name,
            )
        return self._programs[key]

    # -- inputs -------------------------------------------------------------
    def batch_spec(self, shapes: Sequence[tuple[int, ...] | None]) -> BatchSpec:
        """Check count and shapes of parameter values (no values needed)."""
        return batch_spec(self.parameters, shapes)

    def prepare(self, values: Sequence[Any]) -> tuple[np.ndarray, BatchSpec]:
        """Validate NumPy parameter values; return θ (B, p) and the batch spec."""
        shapes = [None if v is None else np.shape(v) for v in values]
        batch = self.batch_spec(shapes)
        theta = flatten(self.parameters, values, batch)
        self.check_values(theta, batch.batched)
        return theta, batch

    def check_values(self, theta: np.ndarray, batched: bool) -> None:
        """NaN/Inf and declared domains (nonneg, pos, PSD, symmetric, ...) of θ (B, p)."""
        _check_values(self.parameters, theta, batched)

    def backend(self, solver_args: Mapping[str, Any] | None) -> tuple[AbstractSolver, dict]:
        """The backend and native settings for a call's ``solver_args``."""
        if solver_args is not None and not isinstance(solver_args, Mapping):
            raise SolverArgumentError(
                f"solver_args: expected a dict, received {type(solver_args).__name__}."
            )
        args = {**self.solver_args, **(solver_args or {})}
        name = args.pop("solve_method", None)
        backend = self.solver if name is None else get_solver(name)
        return backend, backend.settings(args)

    # -- forward ------------------------------------------------------------
    def solve(
        self, theta: np.ndarray, batched: bool, solver_args: Mapping[str, Any] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Solve every batch element.

        Returns:
            (outputs (B, n_out), x (B, n), y (B, m), s (B, m)).

        Raises:
            SolverError: some elements have no solution (indices and statuses attached).
        """
        backend, settings = self.backend(solver_args)
        prog = self.program(backend)
        data = prog.data.apply(theta)
        batch = theta.shape[0]
        x, y, s = np.full((batch, prog.n), np.nan), *np.full((2, batch, prog.m), np.nan)
        results = [backend.solve(prog.data.program(d), settings) for d in data]
        for b, r in enumerate(results):
            if r.status.has_solution:
                x[b], y[b], s[b] = r.x, r.y, r.s
        self.info = SolveInfo(
            solver=backend.name,
            status=tuple(r.status for r in results),
            iterations=np.array([r.iterations for r in results]),
            solve_time=np.array([r.solve_time for r in results]),
        )
        outputs = prog.outputs_from(x, y)
        self._report(self.info, batched, outputs)
        return outputs, x, y, s

    def _report(self, info: SolveInfo, batched: bool, outputs: np.ndarray) -> None:
        failed = [b for b, st in enumerate(info.status) if not st.has_solution]
        where = "batch elements " if batched else "the problem "
        if failed:
            statuses = [info.status[b] for b in failed]
            listed = ", ".join(f"{b}: {st.value}" for b, st in zip(failed, statuses, strict=True))
            raise SolverError(
                f"{info.solver} found no solution for {where}"
                f"{'[' + listed + ']' if batched else '(' + statuses[0].value + ')'}. "
                "Check that the parameter values make the problem feasible and bounded; "
                "the outputs of the other elements are in `err.outputs`.",
                failed,
                statuses,
                [outputs],
            )
        inexact = [b for b, st in enumerate(info.status) if st is SolverStatus.OPTIMAL_INACCURATE]
        if inexact:
            warnings.warn(
                f"{info.solver} returned inaccurate solutions for {where}"
                f"{inexact if batched else ''}; gradients may be poor. Tighten the solver "
                "tolerance or raise its iteration limit (solver_args).",
                InaccurateSolutionWarning,
                stacklevel=3,
            )

    # -- derivatives --------------------------------------------------------
    def _derivative(self, solver: str, theta, x, y, s) -> tuple[ParametricConeProgram, Any]:
        prog = self.program(get_solver(solver))
        deriv = SolutionDerivative(
            prog.data, prog.data.apply(theta), x, y, s, linear_solver=self.linear_solver
        )
        return prog, deriv

    def _record(self, deriv: SolutionDerivative) -> None:
        if self.info is not None and deriv.report is not None:
            report = deriv.report
            self.info = SolveInfo(
                **{k: getattr(self.info, k) for k in ("solver", "status", "iterations",
                                                       "solve_time")},
                derivative=DerivativeInfo(report.method, report.residual),
            )

    def vjp(self, solver: str, theta, x, y, s, g_outputs: np.ndarray) -> np.ndarray:
        """Cotangent (B, n_out) of the stacked outputs -> cotangent (B, p) of θ."""
        prog, deriv = self._derivative(solver, theta, x, y, s)
        gx, gy = prog.outputs_vjp(prog.outputs_from(x, y), g_outputs)
        gdata = deriv.vjp(gx, gy, np.zeros_like(gy))
        self._record(deriv)
        return prog.data.vjp(theta, gdata)

    def jvp(self, solver: str, theta, x, y, s, dtheta: np.ndarray) -> np.ndarray:
        """Tangent (B, p) of θ -> tangent (B, n_out) of the stacked outputs."""
        prog, deriv = self._derivative(solver, theta, x, y, s)
        dx, dy, _ = deriv.jvp(prog.data.jvp(theta, dtheta))
        self._record(deriv)
        return prog.outputs_jvp(prog.outputs_from(x, y), dx, dy)
