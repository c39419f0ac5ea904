"""The solution map θ ↦ outputs of a compiled problem, batched, with JVP and VJP.

This is everything a layer does except talking to a framework. Adapters convert
tensors to NumPy arrays (one per parameter), call :meth:`SolutionMap.solve`,
and wire :meth:`SolutionMap.vjp` / :meth:`SolutionMap.jvp` into their autodiff;
all layout (batching, broadcasting, flattening) happens here.

A :class:`SolutionMap` is stateless once built: every call returns its results
together with its own diagnostics, and what the backward pass needs travels as
plain arrays (:attr:`Solution.state`). So one map can serve several threads at
once, and it pickles and deep-copies (without the CVXPY problem's caches).
"""

from __future__ import annotations

import copy
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
from convexlayers._core._cache import FactorCache, fingerprint
from convexlayers._core._info import INFO_WIDTH, DerivativeInfo, SolveInfo
from convexlayers._core._parallel import solve_all
from convexlayers._core._report import check_on_failure, make_adjoint, report
from convexlayers._core._values import check_values
from convexlayers._errors import ProblemError, SolverArgumentError
from convexlayers.compile import OutputSpec, ParametricConeProgram, ParamSpec, compile_problem
from convexlayers.derivative import (
    AbstractAdjoint,
    AbstractLinearSolver,
    FactorStore,
    SolutionDerivative,
)
from convexlayers.solvers import DEFAULT_SOLVER, get_solver
from convexlayers.solvers._base import AbstractSolver

__all__ = ["Solution", "SolutionMap"]

# Arrays that carry a call from the forward to the backward pass: x, y, s, diagnostics.
STATE_SIZE = 4
# Tolerance ("eps") of the second solve of elements that polishing could not make exact,
# and of the third, by another backend (with its iteration limit).
TIGHT_EPS = 1e-11
RETRY_EPS, RETRY_ITERS = 1e-9, 10_000  # bounded: a retry must not cost more than a solve


@dataclass(frozen=True)
class Solution:
    """Result of :meth:`SolutionMap.solve`.

    Attributes:
        outputs: one array per requested variable (batched like the call).
        state: [x (B, n), y (B, m), s (B, m), diagnostics (B, 4)]: what a backward or
            forward-mode pass needs besides the parameter values, as plain arrays.
        info: the diagnostics of this call.
    """

    outputs: list[np.ndarray]
    state: list[np.ndarray]
    info: SolveInfo


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
        adjoint: the derivative strategy (default
            :class:`~convexlayers.derivative.ImplicitAdjoint`: outputs polished to the exact
            solution by Newton steps on the KKT conditions, derivatives by implicit
            differentiation reusing the last step's factorization).
        linear_solver, refine: shorthands for ``adjoint=ImplicitAdjoint(linear_solver,
            polish)``, kept from version 0.1: ``refine=True`` is ``polish=True``,
            ``"auto"`` is ``polish="derivative"``, ``False`` is ``polish=False``.
        on_failure: what a call does when some batch elements have no solution:
            ``"raise"`` (default) raises :class:`~convexlayers.SolverError`; ``"nan"``
            returns NaN outputs and zero gradients for those elements, the others solved
            and differentiated as usual, the failures listed in ``info.failed``.
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
        refine: bool | str | None = None,
        on_failure: str = "raise",
        adjoint: AbstractAdjoint | None = None,
    ) -> None:
        if solver_args is not None and not isinstance(solver_args, Mapping):
            raise SolverArgumentError(
                f"solver_args: expected a dict, received {type(solver_args).__name__}."
            )
        self.adjoint = make_adjoint(adjoint, linear_solver, refine)
        self._factors = FactorCache()
        self.on_failure = check_on_failure(on_failure)
        self._source: tuple | None = (problem, parameters, variables)
        self._gp = gp
        self.solver_args = dict(solver_args or {})
        method = self.solver_args.pop("solve_method", None)
        argument = "solver" if solver or not method else "solver_args['solve_method']"
        self.solver = get_solver(solver or method or DEFAULT_SOLVER, argument)
        self.solver.settings(self.solver_args)  # fail now on a bad key, not at the first call
        self._programs: dict[tuple, ParametricConeProgram] = {}
        default = self.program(self.solver)
        self.parameters: tuple[ParamSpec, ...] = default.parameters
        self.outputs: tuple[OutputSpec, ...] = default.outputs

    # -- copies and pickles ---------------------------------------------------
    def __getstate__(self) -> dict:
        """The compiled programs, settings and the CVXPY problem without its caches.

        CVXPY caches its compilation on the problem (large arrays and solver objects);
        only the problem itself travels, so another solver family can still be compiled
        after unpickling.
        """
        state = dict(self.__dict__)
        if self._source is not None:
            state["_source"] = (_without_caches(self._source[0]), *self._source[1:])
        return state

    def program(self, backend: AbstractSolver | str) -> ParametricConeProgram:
        """The problem compiled for ``backend``'s capabilities (cached)."""
        backend = get_solver(backend) if isinstance(backend, str) else backend
        key = (backend.supports_quadratic_objective, backend.supported_cones)
        if key not in self._programs:  # a program compiled for another backend may fit
            fits = [p for p in self._programs.values() if _fits(p, backend)]
            if fits:
                self._programs[key] = fits[0]
        if key not in self._programs:
            if self._source is None:
                raise ProblemError(
                    f"solver: this layer was restored without its CVXPY problem and cannot "
                    f"be compiled for {backend.name}; rebuild the layer from the problem."
                )
            problem, parameters, variables = self._source
            self._programs[key] = compile_problem(
                problem, parameters, variables, gp=self._gp,
                quadratic=backend.supports_quadratic_objective,
                cones=backend.supported_cones, solver=backend.name,
            )
        return self._programs[key]

    # -- shapes (no values needed: usable while tracing) ------------------------
    def batch_spec(self, shapes: Sequence[tuple[int, ...] | None]) -> BatchSpec:
        """Check count and shapes of the parameter values; infer the batch."""
        return batch_spec(self.parameters, shapes)

    def output_shapes(self, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Shapes of the outputs of a call with parameter values of these shapes."""
        return output_shapes(self.outputs, self.batch_spec(shapes))

    def state_shapes(self, solver: str, batch: int) -> list[tuple[int, int]]:
        """Shapes of :attr:`Solution.state` for ``batch`` elements solved by ``solver``."""
        prog = self.program(solver)
        return [(batch, prog.n), (batch, prog.m), (batch, prog.m), (batch, INFO_WIDTH)]

    def backend(self, solver_args: Mapping[str, Any] | None) -> tuple[AbstractSolver, dict]:
        """The backend and native settings for a call's ``solver_args``.

        Raises:
            SolverArgumentError: bad ``solver_args``.
            ProblemError: the problem cannot be compiled for the backend they choose
                (compiled here, cached, so that this fails before any work).
        """
        if solver_args is not None and not isinstance(solver_args, Mapping):
            raise SolverArgumentError(
                f"solver_args: expected a dict, received {type(solver_args).__name__}."
            )
        args = {**self.solver_args, **(solver_args or {})}
        name = args.pop("solve_method", None)
        backend = self.solver if name is None else get_solver(name, "solver_args['solve_method']")
        settings = backend.settings(args)
        self.program(backend)
        return backend, settings

    def _theta(self, values: Sequence[Any]) -> tuple[np.ndarray, BatchSpec]:
        batch = self.batch_spec([None if v is None else np.shape(v) for v in values])
        return flatten(self.parameters, values, batch), batch

    # -- forward ------------------------------------------------------------
    def solve(
        self,
        values: Sequence[Any],
        solver_args: Mapping[str, Any] | None = None,
        on_failure: str | None = None,
    ) -> Solution:
        """Validate the values and solve every batch element.

        Args:
            values: one array per parameter (its shape, or with a leading batch axis).
            solver_args: this call's settings, over the layer's.
            on_failure: this call's failure policy, over the layer's ("raise" or "nan").

        Raises:
            ParameterError: bad count, shapes, batch sizes, NaN/Inf, or values outside a
                parameter's declared domain.
            SolverError: some elements have no solution (indices and statuses attached),
                unless the failure policy is "nan".
        """
        policy = self.on_failure if on_failure is None else check_on_failure(on_failure)
        backend, settings = self.backend(solver_args)
        theta, batch = self._theta(values)
        check_values(self.parameters, theta, batch.batched)
        prog = self.program(backend)
        data = prog.data.apply(theta)
        x = np.full((batch.size, prog.n), np.nan)
        y, s = np.full((2, batch.size, prog.m), np.nan)
        results = _solve(backend, prog, data, settings)
        x, y, s, residual, factors = self._improve(backend, settings, prog, data, results)
        if factors is not None:  # for the backward pass of this call
            self._factors.put(fingerprint(theta, x, y), factors)
        info = SolveInfo(
            solver=backend.name,
            status=tuple(r.status for r in results),
            iterations=np.array([r.iterations for r in results], dtype=np.int64),
            solve_time=np.array([r.solve_time for r in results], dtype=np.float64),
            residual=residual,
        )
        outputs = split_outputs(prog.outputs, prog.outputs_from(x, y), batch)
        report(info, batch.batched, outputs, policy, self.adjoint)
        return Solution(outputs, [x, y, s, info.to_array()], info)

    def _improve(self, backend, settings, prog, data, results):
        """The points the call returns: the solver's, or polished by the adjoint.

        Elements that polishing cannot bring below the adjoint's target (a solver stopped
        short, or wrong) are solved again and polished once more: by the same backend at
        a tight tolerance, then, if still short, by another backend (SCS, or Clarabel
        after SCS). ``results`` is updated where a retry did better; what stays above the
        target is left for :func:`report` to warn about.
        """
        x, y, s = _stack(results, prog.n, prog.m)
        if not self.adjoint.polishes_outputs:
            pol = self.adjoint.improve(prog.data, data, x, y, s, threshold=np.inf)
            return x, y, s, pol.residual, None
        pol = self.adjoint.improve(prog.data, data, x, y, s)
        x, y, s, residual = pol.x, pol.y, pol.s, pol.residual
        for retry in _retries(backend, settings, prog):
            stuck = np.flatnonzero(residual > self.adjoint.target)
            if not stuck.size:
                break
            again = _solve(retry[0], prog, data[stuck], retry[1])
            x2, y2, s2 = _stack(again, prog.n, prog.m)
            pol2 = self.adjoint.improve(prog.data, data[stuck], x2, y2, s2)
            better = np.flatnonzero(pol2.residual < residual[stuck])  # NaN: False
            for i in better:
                b = stuck[i]
                x[b], y[b], s[b], residual[b] = pol2.x[i], pol2.y[i], pol2.s[i], pol2.residual[i]
                results[b] = again[i]
            pol.factors.adopt(stuck[better], pol2.factors, better)
        return x, y, s, residual, pol.factors

    # -- derivatives --------------------------------------------------------
    def _derivative(self, prog: ParametricConeProgram, theta: np.ndarray, x, y, s, cached):
        """The adjoint's derivative at (x, y, s), polished first where the adjoint does.

        ``cached``: factorizations the forward pass left for these elements, if any.
        Returns the derivative (``deriv.x``, ``deriv.y`` are the point it is taken at)
        and that point's relative KKT residual.
        """
        data = prog.data.apply(theta)
        adjoint = self.adjoint
        pol = adjoint.improve(prog.data, data, x, y, s, threshold=adjoint.target)
        if cached is not None:
            reuse = np.flatnonzero(~pol.factors.known() & cached.known())
            pol.factors.adopt(reuse, cached)
        deriv = adjoint.linearize(prog.data, data, pol.x, pol.y, pol.s, pol.factors)
        return deriv, pol.residual

    def _linearize(self, values: Sequence[Any], state: Sequence[np.ndarray], solver: str):
        """Shared set-up of :meth:`vjp` and :meth:`jvp`: only solved elements are
        differentiated; the others get zero derivatives and method "none"."""
        theta, batch = self._theta(values)
        x, y, s, diagnostics = (np.asarray(a, dtype=np.float64) for a in state)
        prog = self.program(solver)
        solved = np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1)
        idx = np.flatnonzero(solved)
        cached = None
        if self.adjoint.polishes_outputs:
            stored = self._factors.get(fingerprint(theta, x, y))
            if stored is not None:
                cached = FactorStore(idx.size)
                cached.adopt(np.arange(idx.size), stored, idx)
        deriv, kkt = self._derivative(prog, theta[idx], x[idx], y[idx], s[idx], cached)
        return theta, batch, prog, idx, deriv, kkt, SolveInfo.from_array(solver, diagnostics)

    @staticmethod
    def _info(info: SolveInfo, deriv: SolutionDerivative, idx, kkt) -> SolveInfo:
        size = len(info.status)
        method, residual, at = ["none"] * size, np.full(size, np.nan), np.full(size, np.nan)
        steps = np.zeros(size, dtype=np.int64)
        if deriv.report is not None:
            for i, b in enumerate(idx):
                method[b] = deriv.report.method[i]
            residual[idx], at[idx] = deriv.report.residual, kkt
            steps[idx] = deriv.report.refinements
        return info.with_derivative(DerivativeInfo(tuple(method), residual, at, steps))

    def vjp(
        self, values: Sequence[Any], state: Sequence[np.ndarray], cotangents: Sequence[Any],
        solver: str,
    ) -> tuple[list[np.ndarray], SolveInfo]:
        """Cotangents of the outputs (None for zero) -> cotangent of each parameter value.

        Returns:
            The cotangents, and the forward call's diagnostics with this derivative's.
        """
        theta, batch, prog, idx, deriv, kkt, info = self._linearize(values, state, solver)
        g = stack_outputs(prog.outputs, cotangents, batch)[idx]
        gtheta = np.zeros_like(theta)
        if idx.size:
            gx, gy = prog.outputs_vjp(prog.outputs_from(deriv.x, deriv.y), g)
            gdata = deriv.vjp(gx, gy, np.zeros_like(gy))
            gtheta[idx] = prog.data.vjp(theta[idx], gdata)
        grads = unflatten_params(self.parameters, gtheta, batch)
        return grads, self._info(info, deriv, idx, kkt)

    def jvp(
        self, values: Sequence[Any], state: Sequence[np.ndarray], tangents: Sequence[Any],
        solver: str,
    ) -> tuple[list[np.ndarray], SolveInfo]:
        """Tangents of the parameter values (None for zero) -> tangent of each output.

        Returns:
            The output tangents, and the forward call's diagnostics with this derivative's.
        """
        theta, batch, prog, idx, deriv, kkt, info = self._linearize(values, state, solver)
        zero = [np.zeros(np.shape(v)) if t is None else t
                for v, t in zip(values, tangents, strict=True)]
        dtheta = flatten(self.parameters, zero, batch)
        dout = np.zeros((batch.size, prog.R.shape[0]))
        if idx.size:
            dx, dy, _ = deriv.jvp(prog.data.jvp(theta[idx], dtheta[idx]))
            out = prog.outputs_from(deriv.x, deriv.y)
            dout[idx] = prog.outputs_jvp(out, dx, dy)
        return split_outputs(prog.outputs, dout, batch), self._info(info, deriv, idx, kkt)


def _retries(backend: AbstractSolver, settings: Mapping[str, Any],
             prog: ParametricConeProgram):
    """(backend, settings) to retry inexact elements with: the same backend at a tight
    tolerance, then another backend that can solve the program, at a tight tolerance."""
    yield backend, {**settings, **backend.settings({"eps": TIGHT_EPS})}
    other = get_solver("SCS" if backend.name != "SCS" else "CLARABEL")
    if _fits(prog, other):
        yield other, other.settings({"eps": RETRY_EPS, "max_iters": RETRY_ITERS})


def _fits(prog: ParametricConeProgram, backend: AbstractSolver) -> bool:
    """Whether ``backend`` can solve ``prog`` as compiled (its cones, its P)."""
    kinds = prog.data.dims.kinds()
    return kinds <= backend.supported_cones and (
        backend.supports_quadratic_objective or prog.data.P is None)


def _solve(backend: AbstractSolver, prog: ParametricConeProgram, data: np.ndarray,
           settings: Mapping[str, Any]) -> list:
    """Solve a batch: as one array program if the backend can, else element by element."""
    if backend.batched:
        return backend.solve_batch(prog.data, data, settings)
    return solve_all(backend, [prog.data.program(d) for d in data], settings)


def _stack(results, n: int, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x, y, s of a list of solver results, NaN where a result has no point."""
    x = np.full((len(results), n), np.nan)
    y, s = np.full((2, len(results), m), np.nan)
    for b, r in enumerate(results):
        if r.status.has_iterate:
            x[b], y[b], s[b] = r.x, r.y, r.s
    return x, y, s


def _without_caches(problem: cp.Problem) -> cp.Problem:
    """A shallow copy of ``problem`` without CVXPY's compilation caches."""
    clone = copy.copy(problem)
    for attr, fresh in (("_cache", lambda: type(problem._cache)()), ("_solver_cache", dict)):
        if hasattr(clone, attr):
            setattr(clone, attr, fresh())
    return clone
