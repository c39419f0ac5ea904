"""The solver interface: one numeric cone program in, one typed result out."""

from __future__ import annotations

import abc
import enum
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from convexlayers._errors import SolverArgumentError
from convexlayers.cones import ConeDims


@dataclass(frozen=True)
class ConeProgram:
    """One instance of the canonical cone program.

        minimize    ½ xᵀ P x + qᵀ x
        subject to  A x + s = b,   s ∈ K

    Attributes:
        P: upper triangle of the symmetric (n, n) matrix P as CSC, or None for P = 0.
        q: (n,) linear cost.
        A: (m, n) constraint matrix, CSC.
        b: (m,) right-hand side.
        dims: the cone K (conventions in :mod:`convexlayers.cones`).
    """

    P: sp.csc_array | None
    q: np.ndarray
    A: sp.csc_array
    b: np.ndarray
    dims: ConeDims

    @property
    def n(self) -> int:
        return self.q.shape[0]

    @property
    def m(self) -> int:
        return self.b.shape[0]


class SolverStatus(enum.Enum):
    """Outcome of one solve, the same for every backend."""

    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    INFEASIBLE = "infeasible"
    INFEASIBLE_INACCURATE = "infeasible_inaccurate"
    UNBOUNDED = "unbounded"
    UNBOUNDED_INACCURATE = "unbounded_inaccurate"
    MAX_ITERATIONS = "max_iterations"
    TIME_LIMIT = "time_limit"
    NUMERICAL_ERROR = "numerical_error"
    UNKNOWN = "unknown"

    @property
    def has_solution(self) -> bool:
        """Whether x, y, s are a (possibly inaccurate) primal-dual solution."""
        return self in (SolverStatus.OPTIMAL, SolverStatus.OPTIMAL_INACCURATE)

    @property
    def has_iterate(self) -> bool:
        """Whether x, y, s are returned: a solution, or the last iterate of a solve stopped
        by its iteration or time limit (an inaccurate point, polished and flagged)."""
        return self.has_solution or self in (SolverStatus.MAX_ITERATIONS, SolverStatus.TIME_LIMIT)


@dataclass(frozen=True)
class SolveResult:
    """Result of one solve.

    Attributes:
        x: (n,) primal solution (or last iterate), None when ``status.has_iterate`` is False.
        y: (m,) dual solution in K*, or None.
        s: (m,) primal slack in K, or None.
        status: outcome.
        iterations: solver iterations.
        solve_time: seconds spent in the solver.
        message: the solver's own status text.
    """

    x: np.ndarray | None
    y: np.ndarray | None
    s: np.ndarray | None
    status: SolverStatus
    iterations: int
    solve_time: float
    message: str = ""


# A starting point (x, y, s) of one program.
WarmPoint = tuple[np.ndarray, np.ndarray, np.ndarray]
# Solves one element of a batch from its (nd,) data and starting point (see ``sequence``).
ElementSolver = Callable[[np.ndarray, WarmPoint | None], SolveResult]

# Keys of cvxpylayers' ``solver_args`` that every backend understands, and their kinds.
COMPAT_KEYS = ("eps", "max_iters", "acceleration_lookback", "verbose")
COMPAT_KINDS = {
    "eps": "positive number",
    "max_iters": "positive int",
    "acceleration_lookback": "int",
    "verbose": "bool",
}
# The solvers' integer settings are C ints.
_INT_MAX = 2**31 - 1


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool | np.bool_)


# Kind of a setting -> (test, what the error message says is expected, conversion).
KINDS: dict[str, tuple[Callable[[Any], bool], str, Callable[[Any], Any]]] = {
    "bool": (lambda v: isinstance(v, bool | np.bool_), "True or False", bool),
    "int": (lambda v: _is_int(v) and abs(v) <= _INT_MAX, "an integer", int),
    "positive int": (
        lambda v: _is_int(v) and 0 < v <= _INT_MAX, "a positive integer (at most 2**31 - 1)", int
    ),
    "nonnegative int": (
        lambda v: _is_int(v) and 0 <= v <= _INT_MAX,
        "a nonnegative integer (at most 2**31 - 1)",
        int,
    ),
    "positive number": (
        lambda v: _is_real(v) and 0 < v < math.inf, "a positive finite number", float
    ),
    "nonnegative number": (lambda v: _is_real(v) and v >= 0, "a nonnegative number", float),
    "number in (0, 2)": (lambda v: _is_real(v) and 0 < v < 2, "a number in (0, 2)", float),
    "str": (lambda v: isinstance(v, str), "a string", str),
}


def check_kind(key: str, value: Any, kind: str, solver: str) -> Any:
    """Check one ``solver_args`` value against its kind; return it as a plain Python value.

    Raises:
        SolverArgumentError: naming the key, the value received and the kind expected.
    """
    test, expected, convert = KINDS[kind]
    if not test(value):
        raise SolverArgumentError(
            f"solver_args[{key!r}]: expected {expected} for {solver}, received {value!r} "
            f"({type(value).__name__})."
        )
    return convert(value)


class AbstractSolver(abc.ABC):
    """A cone-program solver backend.

    Subclasses declare what they can solve and translate ``solver_args`` into
    their native settings; everything else (canonicalization, derivatives,
    frameworks) is outside the solver.
    """

    name: ClassVar[str]
    supports_quadratic_objective: ClassVar[bool]
    supported_cones: ClassVar[frozenset[str]]
    native_keys: ClassVar[frozenset[str]]
    # Kinds (keys of KINDS) of native settings checked before any solve.
    native_kinds: ClassVar[Mapping[str, str]] = {}
    # The solver releases the GIL while it works, so a batch can run on several threads.
    releases_gil: ClassVar[bool] = False
    # The solver takes a whole batch at once (:meth:`solve_batch`) instead of one program
    # at a time (:meth:`solve`, called per element by the layer).
    batched: ClassVar[bool] = False
    # The solver starts from a given point (``warm`` in :meth:`solve`); others ignore it.
    warm_starts: ClassVar[bool] = False

    def solve_batch(self, structure: Any, data: np.ndarray, settings: Mapping[str, Any],
                    warm: tuple[np.ndarray, ...] | None = None) -> list[SolveResult]:
        """Solve a batch: ``data`` (B, nd) laid out as ``structure`` (a compiled
        ``DataMap``: ``split``, ``dims``, the patterns of P and A, ``program(row)``).
        ``warm``: starting points (x (B, n), y (B, m), s (B, m)); NaN rows have none.

        Only backends with ``batched = True`` implement it.
        """
        raise NotImplementedError(f"{self.name} solves one program at a time (solve).")

    def sequence(self, structure: Any, settings: Mapping[str, Any]) -> ElementSolver:
        """A solver of batch elements one after another, for one thread: called with an
        element's (nd,) data laid out as ``structure`` (a compiled ``DataMap``) and its
        starting point. It may keep what consecutive elements share (Clarabel keeps its
        solver object); the default builds each element's program and calls
        :meth:`solve`."""

        def one(row: np.ndarray, warm: WarmPoint | None = None) -> SolveResult:
            return self.solve(structure.program(row), settings, warm)

        return one

    def settings(self, solver_args: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``solver_args`` and return native settings.

        Accepts the backend's native keys plus the cvxpylayers keys ``eps``,
        ``max_iters``, ``acceleration_lookback`` (SCS only, ignored elsewhere)
        and ``verbose``. Every value is checked here, before any solve.

        Raises:
            SolverArgumentError: on a key this backend does not know, or a value of the
                wrong kind (naming the key, the value and the kind expected).
        """
        unknown = sorted(set(solver_args) - self.native_keys - set(COMPAT_KEYS))
        if unknown:
            raise SolverArgumentError(
                f"solver_args: {unknown} not understood by {self.name}. Valid keys are "
                f"the cvxpylayers keys {list(COMPAT_KEYS)}, 'solve_method', and "
                f"{self.name}'s own settings: {sorted(self.native_keys)}."
            )
        args = dict(solver_args)
        for key, value in args.items():
            kind = COMPAT_KINDS.get(key, self.native_kinds.get(key))
            if kind is not None:
                args[key] = check_kind(key, value, kind, self.name)
        native = {k: v for k, v in args.items() if k in self.native_keys}
        compat = {k: v for k, v in args.items() if k in COMPAT_KEYS}
        self._check_native(native)
        return {**self._translate(compat), **native}

    def _check_native(self, native: Mapping[str, Any]) -> None:
        """Check native settings beyond their declared kinds (backend-specific).

        Raises:
            SolverArgumentError: on a value the backend would reject.
        """
        return  # the declared kinds are all a backend without its own checks needs

    def check_program(self, program: ConeProgram) -> None:
        """Check that this backend can solve ``program`` and that its shapes agree.

        Raises:
            ValueError: on inconsistent shapes, a cone kind this backend does not
                support, or a nonzero P for a backend without quadratic objectives.
        """
        m, n = program.m, program.n
        if program.A.shape != (m, n) or program.dims.size != m:
            raise ValueError(
                f"inconsistent cone program: A has shape {program.A.shape}, q has {n} "
                f"entries, b has {m} and the cone {program.dims} has {program.dims.size} rows."
            )
        if program.P is not None and program.P.shape != (n, n):
            raise ValueError(f"P must have shape ({n}, {n}), got {program.P.shape}.")
        unsupported = sorted(program.dims.kinds() - self.supported_cones)
        if unsupported:
            raise ValueError(
                f"{self.name} does not support the cone kinds {unsupported} (it supports "
                f"{sorted(self.supported_cones)}); use another solver, e.g. CLARABEL."
            )
        quadratic = program.P is not None and program.P.count_nonzero() > 0
        if quadratic and not self.supports_quadratic_objective:
            raise ValueError(
                f"{self.name} has no quadratic objective: pass P=None (lift ½xᵀPx into a "
                "second-order cone first) or use CLARABEL or SCS."
            )

    @abc.abstractmethod
    def _translate(self, compat: Mapping[str, Any]) -> dict[str, Any]:
        """Map the cvxpylayers keys present in ``compat`` to native settings."""

    @abc.abstractmethod
    def solve(self, program: ConeProgram, settings: Mapping[str, Any],
              warm: WarmPoint | None = None) -> SolveResult:
        """Solve one cone program with already-validated native ``settings``, from the
        starting point ``warm`` (x, y, s) where the backend ``warm_starts``."""
