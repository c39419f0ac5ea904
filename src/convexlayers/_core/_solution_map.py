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

from convexlayers._core import _kernel as kernel
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
from convexlayers._core._executor import ChunkedExecutor, as_chunked, concat, run_chunked
from convexlayers._core._info import INFO_WIDTH, DerivativeInfo, SolveInfo
from convexlayers._core._report import check_on_failure, make_adjoint, report
from convexlayers._core._values import check_values, check_warm
from convexlayers._errors import ProblemError, SolverArgumentError
from convexlayers.compile import OutputSpec, ParametricConeProgram, ParamSpec, compile_problem
from convexlayers.derivative import (
    AbstractAdjoint,
    AbstractLinearSolver,
    FactorStore,
)
from convexlayers.solvers import DEFAULT_SOLVER, get_solver
from convexlayers.solvers._base import AbstractSolver

__all__ = ["Solution", "SolutionMap"]

# Arrays that carry a call from the forward to the backward pass: x, y, s, diagnostics.
STATE_SIZE = 4


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
        solver: backend name; None (default): each call picks NATIVE for a batch of
            dense LPs/QPs, Clarabel otherwise (see ``_choose``).
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
        executor: solve batches larger than one chunk on a ``concurrent.futures.Executor``
            (a process pool, a Dask or Ray cluster), forward and backward; a
            :class:`~convexlayers.ChunkedExecutor` sets the chunk size and a timeout. It
            does not travel with a pickled or copied map.
    """

    # Class-level defaults: a map pickled before the automatic choice existed has no
    # such attributes and keeps its named backend.
    _auto = False
    _profile: tuple[tuple[int, float] | None] | None = None

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
        executor: Any = None,
    ) -> None:
        self.executor = executor
        self._last: tuple | None = None  # (backend, x, y, s) of the last solve: warm starts
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
        # solver=None: each call picks NATIVE or the default by the program and batch.
        self._auto = solver is None and method is None
        self._profile = None  # computed at the first automatic choice
        self.solver.settings(self.solver_args)  # fail now on a bad key, not at the first call
        self._programs: dict[tuple, ParametricConeProgram] = {}
        default = self.program(self.solver)
        self.parameters: tuple[ParamSpec, ...] = default.parameters
        self.outputs: tuple[OutputSpec, ...] = default.outputs

    @property
    def executor(self) -> ChunkedExecutor | None:
        """Where batches are solved: None (this process) or a :class:`ChunkedExecutor`."""
        return self._executor

    @executor.setter
    def executor(self, executor: Any) -> None:
        self._executor = as_chunked(executor)

    # -- copies and pickles ---------------------------------------------------
    def __getstate__(self) -> dict:
        """The compiled programs, settings and the CVXPY problem without its caches.

        CVXPY caches its compilation on the problem (large arrays and solver objects);
        only the problem itself travels, so another solver family can still be compiled
        after unpickling.
        """
        state = dict(self.__dict__)
        state.update(_executor=None, _last=None)
        if self._source is not None:
            state["_source"] = (_without_caches(self._source[0]), *self._source[1:])
        return state

    def program(self, backend: AbstractSolver | str) -> ParametricConeProgram:
        """The problem compiled for ``backend``'s capabilities (cached)."""
        backend = get_solver(backend) if isinstance(backend, str) else backend
        key = (backend.supports_quadratic_objective, backend.supported_cones)
        if key not in self._programs:  # a program compiled for another backend may fit
            fits = [p for p in self._programs.values() if kernel.fits(p, backend)]
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
        warm_start: bool | Sequence[np.ndarray] = False,
    ) -> Solution:
        """Validate the values and solve every batch element.

        Args:
            values: one array per parameter (its shape, or with a leading batch axis).
            solver_args: this call's settings, over the layer's.
            on_failure: this call's failure policy, over the layer's ("raise" or "nan").
            warm_start: start the backends that take a starting point (SCS, NATIVE) from
                this map's previous solution, element by element (True; a cold start if
                that call had another batch size or backend), or from the given points
                (x (B, n), y (B, m), s (B, m): a :attr:`Solution.state`'s first three).

        Raises:
            ParameterError: bad count, shapes, batch sizes, NaN/Inf, or values outside a
                parameter's declared domain; a warm start of the wrong shape.
            SolverError: some elements have no solution (indices and statuses attached),
                unless the failure policy is "nan".
            ExecutorError: a chunk handed to the executor was lost.
        """
        policy = self.on_failure if on_failure is None else check_on_failure(on_failure)
        backend, settings = self.backend(solver_args)
        theta, batch = self._theta(values)
        check_values(self.parameters, theta, batch.batched)
        prog = self.program(backend)
        if self._auto and not {**self.solver_args, **(solver_args or {})}:
            backend, settings = self._choose(backend, settings, prog, batch.size)
        warm = self._warm(warm_start, backend.name, prog, batch.size)
        fwd = self._forward(prog, backend, settings, theta, warm)
        if fwd.factors is not None:  # for the backward pass of this call
            self._factors.put(fingerprint(theta, fwd.x, fwd.y), fwd.factors)
        self._last = (backend.name, fwd.x, fwd.y, fwd.s)
        info = SolveInfo(
            solver=backend.name,
            status=tuple(r.status for r in fwd.results),
            iterations=np.array([r.iterations for r in fwd.results], dtype=np.int64),
            solve_time=np.array([r.solve_time for r in fwd.results], dtype=np.float64),
            residual=fwd.residual,
        )
        outputs = split_outputs(prog.outputs, prog.outputs_from(fwd.x, fwd.y), batch)
        report(info, batch.batched, outputs, policy, self.adjoint)
        return Solution(outputs, [fwd.x, fwd.y, fwd.s, info.to_array()], info)

    def _choose(self, backend, settings, prog, batch: int):
        """The automatic choice of a call without settings: NATIVE where it is measured
        faster (:func:`convexlayers.solvers._native.prefers_native`), else ``backend``."""
        from convexlayers.solvers._native import dense_profile, prefers_native

        if self._profile is None:  # the default backend's program: one per map
            self._profile = (dense_profile(prog.data),)
        if not prefers_native(self._profile[0], batch):
            return backend, settings
        native = get_solver("NATIVE")
        return native, native.settings({})

    def _warm(self, warm_start, solver: str, prog: ParametricConeProgram, size: int):
        """The starting points of a call, or None (cold start)."""
        if warm_start is False or warm_start is None:
            return None
        if warm_start is True:
            last = self._last
            if last is None or last[0] != solver or last[1].shape[0] != size:
                return None
            return last[1:]
        return check_warm(warm_start, prog.n, prog.m, size)

    def _chunked(self, batch: int) -> ChunkedExecutor | None:
        """The executor, if this batch is more than one of its chunks."""
        chunked = self.executor
        return chunked if chunked is not None and len(chunked.bounds(batch)) > 1 else None

    def _forward(self, prog, backend, settings, theta, warm) -> kernel.Forward:
        chunked = self._chunked(theta.shape[0])
        if chunked is None:
            return kernel.forward(prog, backend, settings, self.adjoint, theta, warm)
        parts = run_chunked(chunked, kernel.forward_remote,
                            (prog, backend, settings, self.adjoint), [theta, warm])
        x, y, s, residual = (concat([getattr(part, k) for part in parts])
                             for k in ("x", "y", "s", "residual"))
        return kernel.Forward([r for part in parts for r in part.results], x, y, s,
                              residual, None)

    # -- derivatives --------------------------------------------------------
    def _differentiate(self, values, state, solver: str, work, direction, width):
        """Shared work of :meth:`vjp` and :meth:`jvp`: ``work`` (a :mod:`._kernel` rows
        function) on the solved elements with their rows of ``direction(prog, batch)``;
        the others get zero derivatives and method "none". Returns the (B, width)
        result, the batch, and the forward's info completed with the derivative's."""
        theta, batch = self._theta(values)
        x, y, s, diagnostics = (np.asarray(a, dtype=np.float64) for a in state)
        prog = self.program(solver)
        info = SolveInfo.from_array(solver, diagnostics)
        idx = np.flatnonzero(np.isfinite(x).all(axis=1) & np.isfinite(y).all(axis=1))
        out = np.zeros((batch.size, width(prog, theta)))
        if not idx.size:
            return out, batch, self._info(info, None, idx)
        d = direction(prog, batch)
        rows = [theta[idx], x[idx], y[idx], s[idx], d[idx], info.residual[idx]]
        chunked = self._chunked(idx.size)
        if chunked is None:
            res = work(prog, self.adjoint, *rows, self._cached(theta, x, y, idx))
        else:
            parts = run_chunked(chunked, work, (prog, self.adjoint), rows)
            res = kernel.Rows(concat([p.values for p in parts]),
                              tuple(m for p in parts for m in p.method),
                              *(concat([getattr(p, k) for p in parts])
                                for k in ("residual", "kkt", "steps")))
        out[idx] = res.values
        return out, batch, self._info(info, res, idx)

    def _cached(self, theta, x, y, idx) -> FactorStore | None:
        """The forward pass's factorizations of the elements ``idx``, if it left any."""
        if not self.adjoint.polishes_outputs:
            return None
        stored = self._factors.get(fingerprint(theta, x, y))
        if stored is None:
            return None
        return stored.take(idx)

    @staticmethod
    def _info(info: SolveInfo, rows: kernel.Rows | None, idx) -> SolveInfo:
        size = len(info.status)
        method, residual, at = ["none"] * size, np.full(size, np.nan), np.full(size, np.nan)
        steps = np.zeros(size, dtype=np.int64)
        if rows is not None:
            for i, b in enumerate(idx):
                method[b] = rows.method[i]
            residual[idx], at[idx], steps[idx] = rows.residual, rows.kkt, rows.steps
        return info.with_derivative(DerivativeInfo(tuple(method), residual, at, steps))

    def vjp(
        self, values: Sequence[Any], state: Sequence[np.ndarray], cotangents: Sequence[Any],
        solver: str,
    ) -> tuple[list[np.ndarray], SolveInfo]:
        """Cotangents of the outputs (None for zero) -> cotangent of each parameter value.

        Returns:
            The cotangents, and the forward call's diagnostics with this derivative's.
        """
        def direction(prog, batch):
            return stack_outputs(prog.outputs, cotangents, batch)

        gtheta, batch, info = self._differentiate(
            values, state, solver, kernel.vjp_rows, direction, lambda _, theta: theta.shape[1])
        return unflatten_params(self.parameters, gtheta, batch), info

    def jvp(
        self, values: Sequence[Any], state: Sequence[np.ndarray], tangents: Sequence[Any],
        solver: str,
    ) -> tuple[list[np.ndarray], SolveInfo]:
        """Tangents of the parameter values (None for zero) -> tangent of each output.

        Returns:
            The output tangents, and the forward call's diagnostics with this derivative's.
        """
        def direction(prog, batch):
            zero = [np.zeros(np.shape(v)) if t is None else t
                    for v, t in zip(values, tangents, strict=True)]
            return flatten(self.parameters, zero, batch)

        dout, batch, info = self._differentiate(
            values, state, solver, kernel.jvp_rows, direction, lambda prog, _: prog.R.shape[0])
        return split_outputs(self.program(solver).outputs, dout, batch), info


def _without_caches(problem: cp.Problem) -> cp.Problem:
    """A shallow copy of ``problem`` without CVXPY's compilation caches."""
    clone = copy.copy(problem)
    for attr, fresh in (("_cache", lambda: type(problem._cache)()), ("_solver_cache", dict)):
        if hasattr(clone, attr):
            setattr(clone, attr, fresh())
    return clone
