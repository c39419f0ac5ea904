"""The solution map θ ↦ outputs of a compiled problem, batched, with JVP and VJP.

This is everything a layer does except talking to a framework. Adapters convert
tensors to NumPy arrays (one per parameter), call :meth:`SolutionMap.solve`,
and wire :meth:`SolutionMap.vjp` / :meth:`SolutionMap.jvp` into their autodiff;
all layout (batching, broadcasting, flattening) happens here.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cvxpy as cp
import numpy as np

from convexlayers._core._batch import (
    BatchSpec,
    batch_spec,
    flatten,
    output_shapes,
    split_outputs,
    stack_outputs,
    unflatten_params,
)
from convexlayers._core._info import DerivativeInfo, SolveInfo
from convexlayers._core._parallel import solve_all
from convexlayers._core._values import check_values
from convexlayers._errors import InaccurateSolutionWarning, SolverArgumentError, SolverError
from convexlayers.compile import OutputSpec, ParametricConeProgram, ParamSpec, compile_problem
from convexlayers.derivative import (
    AbstractLinearSolver,
    AutoLinearSolver,
    SolutionDerivative,
    kkt_residual,
    refine,
)
from convexlayers.solvers import DEFAULT_SOLVER, get_solver
from convexlayers.solvers._base import AbstractSolver, SolverStatus


@dataclass(frozen=True)
class Solution:
    """Result of :meth:`SolutionMap.solve`.

    Attributes:
        outputs: one array per requested variable (batched like the call).
        x, y, s: the cone program's solution, always (B, n), (B, m), (B, m): what a
            backward or forward-mode pass needs besides the parameter values.
        solver: the backend that produced it.
    """

    outputs: list[np.ndarray]
    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    solver: str


# Relative KKT residual above which refine="auto" polishes a solution, and above which
# a solve the solver itself calls inaccurate is reported as such.
REFINE_ABOVE = 1e-9


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
        refine: polish solutions by damped Newton steps on the KKT normal map (see
            :func:`convexlayers.derivative.refine`), accurate to near machine precision
            wherever the solution is unique, for a few solves of the derivative's linear
            system. ``"auto"`` (default): derivatives are taken at the polished solution
            of every element whose relative KKT residual exceeds ``REFINE_ABOVE`` (1e-9)
            (inaccurate solves, often near weakly active constraints, where a derivative
            at the solver's point can be off by O(1)); forward outputs stay the solver's,
            so inference costs nothing extra. ``True``: the forward pass polishes every
            solution, outputs included. ``False``: never.
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
        refine: bool | str = "auto",
    ) -> None:
        if refine not in (True, False, "auto"):
            raise SolverArgumentError(
                f"refine: expected True, False or 'auto', received {refine!r}."
            )
        self._problem = problem
        self.refine = refine
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

    def program(self, backend: AbstractSolver | str) -> ParametricConeProgram:
        """The problem compiled for ``backend``'s capabilities (cached)."""
        backend = get_solver(backend) if isinstance(backend, str) else backend
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

    # -- shapes (no values needed: usable while tracing) ------------------------
    def batch_spec(self, shapes: Sequence[tuple[int, ...] | None]) -> BatchSpec:
        """Check count and shapes of the parameter values; infer the batch."""
        return batch_spec(self.parameters, shapes)

    def output_shapes(self, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Shapes of the outputs of a call with parameter values of these shapes."""
        return output_shapes(self.outputs, self.batch_spec(shapes))

    def state_sizes(self, solver: str) -> tuple[int, int]:
        """(n, m): widths of x and of y, s for the given backend."""
        prog = self.program(solver)
        return prog.n, prog.m

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

    def _theta(self, values: Sequence[Any]) -> tuple[np.ndarray, BatchSpec]:
        batch = self.batch_spec([None if v is None else np.shape(v) for v in values])
        return flatten(self.parameters, values, batch), batch

    # -- forward ------------------------------------------------------------
    def solve(
        self, values: Sequence[Any], solver_args: Mapping[str, Any] | None = None
    ) -> Solution:
        """Validate the values and solve every batch element.

        Raises:
            ParameterError: bad count, shapes, batch sizes, NaN/Inf, or values outside a
                parameter's declared domain.
            SolverError: some elements have no solution (indices and statuses attached).
        """
        backend, settings = self.backend(solver_args)
        theta, batch = self._theta(values)
        check_values(self.parameters, theta, batch.batched)
        prog = self.program(backend)
        data = prog.data.apply(theta)
        x = np.full((batch.size, prog.n), np.nan)
        y, s = np.full((2, batch.size, prog.m), np.nan)
        results = solve_all(backend, [prog.data.program(d) for d in data], settings)
        ok = np.array([r.status.has_solution for r in results], dtype=bool)
        for b in np.flatnonzero(ok):
            x[b], y[b], s[b] = results[b].x, results[b].y, results[b].s
        residual = np.full(batch.size, np.nan)
        if ok.any():
            residual[ok] = kkt_residual(prog.data, data[ok], x[ok], y[ok], s[ok])
            if self.refine is True:
                self._polish(prog, data, x, y, s, residual, threshold=0.0)
        self.info = SolveInfo(
            solver=backend.name,
            status=tuple(r.status for r in results),
            iterations=np.array([r.iterations for r in results]),
            solve_time=np.array([r.solve_time for r in results]),
            residual=residual,
        )
        outputs = split_outputs(prog.outputs, prog.outputs_from(x, y), batch)
        self._report(self.info, batch.batched, outputs)
        return Solution(outputs, x, y, s, backend.name)

    def _polish(self, prog, data, x, y, s, residual, threshold: float) -> None:
        """Refine, in place, the elements whose KKT residual exceeds ``threshold``."""
        todo = np.flatnonzero(residual > threshold)  # NaN (unsolved) compares False
        if todo.size:
            x[todo], y[todo], s[todo] = refine(
                prog.data, data[todo], x[todo], y[todo], s[todo], self.linear_solver
            )
            residual[todo] = kkt_residual(prog.data, data[todo], x[todo], y[todo], s[todo])

    def _report(self, info: SolveInfo, batched: bool, outputs: list[np.ndarray]) -> None:
        failed = [b for b, st in enumerate(info.status) if not st.has_solution]
        if failed:
            statuses = [info.status[b] for b in failed]
            where = (
                "batch elements [" + ", ".join(f"{b}: {st.value}" for b, st in
                                               zip(failed, statuses, strict=True)) + "]"
                if batched else f"the problem ({statuses[0].value})"
            )
            raise SolverError(
                f"{info.solver} found no solution for {where}. Check that the parameter "
                "values make the problem feasible and bounded; the outputs of the other "
                "elements are in `err.outputs` (NaN where the solve failed).",
                failed,
                statuses,
                outputs,
            )
        inexact = [
            b for b, st in enumerate(info.status)
            if st is SolverStatus.OPTIMAL_INACCURATE and not info.residual[b] <= REFINE_ABOVE
        ]
        if inexact:
            where = f"batch elements {inexact}" if batched else "the problem"
            warnings.warn(
                f"{info.solver} returned an inaccurate solution for {where} (KKT residual above "
                f"{REFINE_ABOVE:g}): the outputs may be inaccurate, and derivatives where "
                "polishing cannot repair them. Tighten the solver tolerance or raise its "
                "iteration limit (solver_args), or pass refine=True to polish the outputs.",
                InaccurateSolutionWarning,
                stacklevel=3,
            )

    # -- derivatives --------------------------------------------------------
    def _derivative(self, solver: str, theta: np.ndarray, x, y, s):
        """The derivative at (x, y, s), polished first where inaccurate (refine="auto").

        The outputs a forward pass returned stay the solver's; the derivative is taken at
        the exact solution, which is what makes it trustworthy near weakly active
        constraints. Returns the program, the derivative (``deriv.x``, ``deriv.y`` are the
        point it is taken at) and that point's relative KKT residual.
        """
        prog = self.program(solver)
        data = prog.data.apply(theta)
        x, y, s = x.copy(), y.copy(), s.copy()
        residual = kkt_residual(prog.data, data, x, y, s)
        if self.refine is not False:
            self._polish(prog, data, x, y, s, residual, threshold=REFINE_ABOVE)
        deriv = SolutionDerivative(prog.data, data, x, y, s, linear_solver=self.linear_solver)
        return prog, deriv, residual

    def _record(self, deriv: SolutionDerivative, residual: np.ndarray) -> None:
        report = deriv.report
        if self.info is not None and report is not None:
            derivative = DerivativeInfo(report.method, report.residual, residual)
            self.info = dataclasses.replace(self.info, derivative=derivative)

    def vjp(
        self, values: Sequence[Any], x, y, s, cotangents: Sequence[Any], solver: str
    ) -> list[np.ndarray]:
        """Cotangents of the outputs (None for zero) -> cotangent of each parameter value."""
        theta, batch = self._theta(values)
        prog, deriv, residual = self._derivative(solver, theta, x, y, s)
        g = stack_outputs(prog.outputs, cotangents, batch)
        gx, gy = prog.outputs_vjp(prog.outputs_from(deriv.x, deriv.y), g)
        gdata = deriv.vjp(gx, gy, np.zeros_like(gy))
        self._record(deriv, residual)
        return unflatten_params(self.parameters, prog.data.vjp(theta, gdata), batch)

    def jvp(
        self, values: Sequence[Any], x, y, s, tangents: Sequence[Any], solver: str
    ) -> list[np.ndarray]:
        """Tangents of the parameter values (None for zero) -> tangent of each output."""
        theta, batch = self._theta(values)
        zero = [np.zeros(np.shape(v)) if t is None else t
                for v, t in zip(values, tangents, strict=True)]
        dtheta = flatten(self.parameters, zero, batch)
        prog, deriv, residual = self._derivative(solver, theta, x, y, s)
        dx, dy, _ = deriv.jvp(prog.data.jvp(theta, dtheta))
        self._record(deriv, residual)
        out = prog.outputs_from(deriv.x, deriv.y)
        return split_outputs(prog.outputs, prog.outputs_jvp(out, dx, dy), batch)
