"""The bad-input table: every kind of bad input and what every layer must do with it.

Each row is framework-free: how to build the layer, the values of the call (NumPy
arrays, converted by each framework's test to its own arrays, or :class:`Raw` values
passed as they are), and what must happen: an error of a type whose message matches a
regular expression, or a right answer checked on the outputs. The tests
``test_bad_inputs_{torch,jax,tensorflow}.py`` run every row in every mode of their
framework (eagerly and under ``jit`` / ``tf.function``; a few rows under
``torch.compile``). MANUAL.md's table ("Errors") lists the same kinds.

``when`` says when a row's error can be found: ``"trace"`` rows from what a tracer
sees (count, shapes, dtypes, settings), so they raise our own exception even inside
``jit`` and ``tf.function``; ``"run"`` rows only from the values, so inside a compiled
function they arrive as the framework's run-time error carrying our message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import cvxpy as cp
import numpy as np

from convexlayers import (
    InaccurateSolutionWarning,
    ParameterError,
    ProblemError,
    SolverArgumentError,
    SolverError,
)
from zoo import interval, matrix_parameters, readme_problem, signed_parameters, unbounded

FRAMEWORKS = frozenset({"torch", "jax", "tensorflow"})


@dataclass(frozen=True)
class Raw:
    """A value passed to the layer as it is: a Python object, not a framework array."""

    value: Any


@dataclass(frozen=True)
class Result:
    """What a call returned, as NumPy: outputs, their dtype names, and gradients if asked."""

    outputs: list[np.ndarray]
    dtypes: list[str]
    grads: list[np.ndarray] | None = None


@dataclass(frozen=True)
class BuildRow:
    """Bad input to the constructor ``CvxpyLayer(*args, **kwargs)``."""

    kind: str
    build: Callable[[], tuple[tuple, dict]]
    error: type[Exception]
    match: str


@dataclass(frozen=True)
class CallRow:
    """Bad input to a call of a layer.

    Attributes:
        kind: the row's id.
        layer: () -> (args, kwargs) of ``CvxpyLayer``.
        values: () -> the call's parameter values.
        error: the exception expected (eagerly), or None if the call must work.
        match: regular expression the error message must match.
        when: "trace" (found from shapes, dtypes and settings) or "run" (from the values).
        call: keyword arguments of the call (``solver_args``, ``on_failure``).
        probe: "forward", "grad" (also the gradient of the sum of the first output with
            respect to every value) or "hessian" (a second derivative).
        check: for rows that must work, a check of the :class:`Result`.
        warns: a warning the call must issue.
        inspect: a check of the exception itself (eagerly, where it keeps its type).
    """

    kind: str
    layer: Callable[[], tuple[tuple, dict]]
    values: Callable[[], list]
    error: type[Exception] | None = None
    match: str = ""
    when: str = "trace"
    call: dict = field(default_factory=dict)
    probe: str = "forward"
    check: Callable[[Result], None] | None = None
    warns: type[Warning] | None = None
    inspect: Callable[[Exception], None] | None = None


# -- layers and values ---------------------------------------------------------------------
RNG = np.random.default_rng(0)
A0, B0 = RNG.standard_normal((3, 2)), RNG.standard_normal(3)


def check_row(row: CallRow, run: Callable[[], Any], expected: Callable[[], type]) -> None:
    """Run one call row in one framework and mode: its result checked, its warning
    matched, or the expected error raised with its message (then inspected)."""
    import pytest

    if row.error is None:
        if row.warns is None:
            result = run()
        else:
            with pytest.warns(row.warns, match=row.match or None):
                result = run()
        assert row.check is not None
        row.check(result)
        return
    with pytest.raises(expected(), match=row.match) as info:
        run()
    if row.inspect is not None and isinstance(info.value, row.error):
        row.inspect(info.value)


def readme() -> tuple[tuple, dict]:
    prob, A, b, x = readme_problem()
    return (prob, [A, b], [x]), {}


def readme_reference(A: np.ndarray, b: np.ndarray, **solve_args: Any) -> np.ndarray:
    """``problem.solve()`` of the README problem at (A, b)."""
    prob, A_p, b_p, x = readme_problem()
    A_p.value, b_p.value = A, b
    prob.solve(solver="CLARABEL", **solve_args)
    return np.asarray(x.value)


def close_to(expected: Callable[[], np.ndarray], atol: float, dtype: str | None = None):
    """A check: the first output is ``expected()`` to ``atol`` (relative to its size)."""

    def check(res: Result) -> None:
        ref = expected()
        np.testing.assert_allclose(res.outputs[0], ref, atol=atol * (1 + np.abs(ref).max()))
        if dtype is not None:
            assert res.dtypes[0] == dtype, res.dtypes
        assert res.dtypes[0].startswith(("float", "bfloat")), res.dtypes

    return check


def unnamed() -> tuple[tuple, dict]:
    """A named parameter q first, then an unnamed nonneg one (CVXPY calls it param<id>)."""
    x = cp.Variable(2)
    q, lam = cp.Parameter(2, name="q"), cp.Parameter(nonneg=True)
    return (cp.Problem(cp.Minimize(lam * cp.sum_squares(x) + q @ x), [x >= -1]), [q, lam], [x]), {}


def same_names() -> tuple[tuple, dict]:
    """Two different parameters that share the name "p"."""
    x = cp.Variable(2)
    p1, p2 = cp.Parameter(2, name="p"), cp.Parameter(2, name="p")
    return (cp.Problem(cp.Minimize(cp.sum_squares(x - p1 - p2))), [p1, p2], [x]), {}


def diag_and_bounds() -> tuple[tuple, dict]:
    """D declared diag, u declared within bounds [0, 1]."""
    x = cp.Variable(2)
    D = cp.Parameter((2, 2), diag=True, name="D")
    u = cp.Parameter(2, bounds=(np.zeros(2), np.ones(2)), name="u")
    prob = cp.Problem(cp.Minimize(cp.sum_squares(D @ x) + cp.sum_squares(x - u)))
    return (prob, [D, u], [x]), {}


def psd_problem() -> tuple[tuple, dict]:
    """An SDP: only Clarabel and SCS have the PSD cone."""
    X = cp.Variable((2, 2), symmetric=True)
    C = cp.Parameter((2, 2), symmetric=True, name="C")
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X)), [X >> 0, cp.trace(X) == 1])
    return (prob, [C], [X]), {}


def of(problem: Callable[[], tuple]) -> Callable[[], tuple[tuple, dict]]:
    return lambda: (problem(), {})


def _check_empty(res: Result) -> None:
    assert res.outputs[0].shape == (0, 2)
    assert res.grads is not None
    assert res.grads[0].shape == (0, 3, 2)
    np.testing.assert_array_equal(res.grads[1], np.zeros(3))


def _check_nan_policy(res: Result) -> None:
    out = res.outputs[0]
    assert np.isnan(out[[1, 3]]).all()
    np.testing.assert_allclose(out[[0, 2]], [0.0, 0.0], atol=1e-7)
    assert res.grads is not None
    for g in res.grads:
        np.testing.assert_array_equal(g[[1, 3]], 0.0)
        assert np.isfinite(g).all()


def _inspect_infeasible(err: Exception) -> None:
    assert isinstance(err, SolverError)
    assert err.indices == [1, 3]
    kept = err.outputs[0]
    np.testing.assert_allclose(kept[[0, 2]], [0.0, 0.0], atol=1e-7)
    assert np.isnan(kept[[1, 3]]).all()


def _nan_at(value: float) -> list[np.ndarray]:
    b = np.ones((2, 3))
    b[1, 0] = value
    return [A0, b]


INFEASIBLE = ([0.0, 2.0, 0.0, 5.0], np.ones(4))
PE = ParameterError
SAE = SolverArgumentError

# -- the call-time table -----------------------------------------------------------------------
CALL_ROWS: list[CallRow] = [
    # count, None, shapes and batches: found from shapes, also while tracing
    CallRow("count", readme, lambda: [A0], PE, r"takes 2 parameter values \(A, b, in this order\), "
            r"received 1"),
    CallRow("none", readme, lambda: [A0, Raw(None)], PE, r"parameter 'b': received None; pass a "),
    CallRow("shape", readme, lambda: [A0.T, B0], PE,
            r"'A': expected shape \(3, 2\) \(or \('B', 3, 2\) for a batch\), received \(2, 3\)"),
    CallRow("rank", readme, lambda: [np.ones((2, 2, 3, 2)), B0], PE,
            r"'A': expected shape \(3, 2\).*received \(2, 2, 3, 2\)"),
    CallRow("scalar_for_vector", readme, lambda: [A0, Raw(1.0)], PE,
            r"'b': expected shape \(3,\).*received \(\)"),
    CallRow("batch_sizes", readme, lambda: [np.ones((4, 3, 2)), np.ones((5, 3))], PE,
            r"batch sizes disagree \('A' has 4, 'b' has 5\)"),
    CallRow("batch_sizes_same_names", same_names, lambda: [np.ones((4, 2)), np.ones((5, 2))], PE,
            r"batch sizes disagree \('p' has 4, 'p' has 5\)"),
    CallRow("empty_batch", readme, lambda: [np.zeros((0, 3, 2)), B0], probe="grad",
            check=_check_empty),
    # what the values are made of
    CallRow("not_numbers", readme, lambda: [Raw("abc"), B0], PE,
            r"parameter 'A': expected (a tensor or array of numbers|an array of numbers|real "
            r"numbers), received (str|a string tensor)"),
    CallRow("ragged", readme, lambda: [Raw([[1.0, 2.0], [3.0], [1.0, 1.0]]), B0], PE,
            r"parameter 'A': expected (a tensor or )?(an )?array of numbers, received list"),
    CallRow("complex", readme, lambda: [A0.astype(np.complex128), B0], PE,
            r"parameter 'A': expected real numbers, received .*complex128"),
    CallRow("integers", readme, lambda: [np.array([[1, 0], [0, 1], [1, 1]]), np.array([1, 2, 3])],
            check=close_to(lambda: readme_reference(np.array([[1.0, 0], [0, 1], [1, 1]]),
                                                    np.array([1.0, 2, 3])), 1e-5)),
    CallRow("float16", readme, lambda: [A0.astype(np.float16), B0.astype(np.float16)],
            check=close_to(lambda: readme_reference(A0.astype(np.float16).astype(float),
                                                    B0.astype(np.float16).astype(float)),
                           2e-3, "float16")),
    CallRow("python_values", readme, lambda: [Raw(A0.tolist()), Raw(B0.tolist())],
            check=close_to(lambda: readme_reference(A0, B0), 1e-5)),
    # values: found when the solve runs
    CallRow("nan", readme, lambda: _nan_at(np.nan), PE,
            r"parameter 'b': contains NaN or Inf in batch elements \[1\]", "run"),
    CallRow("inf", readme, lambda: _nan_at(-np.inf), PE,
            r"parameter 'b': contains NaN or Inf in batch elements \[1\]", "run"),
    CallRow("sign_domain", of(signed_parameters), lambda: [np.array(-0.5), np.ones(2)], PE,
            r"'lam': declared nonneg=True but has a min entry -0.5; pass nonnegative", "run"),
    CallRow("pos_domain", of(signed_parameters), lambda: [np.array(1.0), np.array([1.0, 0.0])],
            PE, r"'c': declared pos=True but has a min entry 0; pass positive values", "run"),
    CallRow("psd_domain", of(matrix_parameters), lambda: [np.diag([1.0, -1.0]), np.eye(2)], PE,
            r"'P': declared positive semidefinite, but \(X \+ Xᵀ\)/2 has an eigenvalue -1",
            "run"),
    CallRow("diag_domain", diag_and_bounds, lambda: [np.ones((2, 2)), np.full(2, 0.5)], PE,
            r"'D': declared diag=True but has nonzero off-diagonal entries; pass a diagonal",
            "run"),
    CallRow("bounds_domain", diag_and_bounds,
            lambda: [np.eye(2), np.array([[0.5, 0.5], [2.0, 0.5]])], PE,
            r"'u': entry \(0,\) is 2, outside its declared bounds \[0, 1\] in batch elements "
            r"\[1\]", "run"),
    CallRow("unnamed_parameter", unnamed, lambda: [np.ones(2), np.array(-1.0)], PE,
            r"parameter 'param\d+' \(argument 2\): declared nonneg=True", "run"),
    CallRow("infeasible", of(interval), lambda: list(INFEASIBLE), SolverError,
            r"(CLARABEL|NATIVE) found no solution for batch elements "
            r"\[1: infeasible, 3: infeasible\]"
            r".*on_failure='nan'", "run", inspect=_inspect_infeasible),
    CallRow("unbounded", of(unbounded), lambda: [np.array(-1.0)], SolverError,
            r"found no solution for the problem \(unbounded\)", "run"),
    CallRow("infeasible_kept_as_nan", of(interval), lambda: list(INFEASIBLE),
            call={"on_failure": "nan"}, probe="grad", check=_check_nan_policy),
    # Stopped after 1 iteration, the element is retried (tighter, then by SCS) and
    # polished: the right answer, no warning (test_reliability.py checks the raw iterate).
    CallRow("iteration_limit", readme, lambda: [A0, B0], call={"solver_args": {"max_iters": 1}},
            check=close_to(lambda: readme_reference(A0, B0, tol_gap_abs=1e-12,
                                                    tol_gap_rel=1e-12), 1e-7)),
    CallRow("huge_scale", readme, lambda: [1e6 * A0, 1e6 * B0],
            check=close_to(lambda: readme_reference(A0, B0, tol_gap_abs=1e-12,
                                                    tol_gap_rel=1e-12), 1e-7)),
    CallRow("tiny_scale", readme, lambda: [1e-6 * A0, 1e-6 * B0],
            check=close_to(lambda: readme_reference(A0, B0, tol_gap_abs=1e-12,
                                                    tol_gap_rel=1e-12), 1e-7)),
    CallRow("tinier_scale", readme, lambda: [1e-8 * A0, 1e-8 * B0],
            match=r"could not be made exact .* or data of a tiny scale", when="run",
            check=lambda res: None, warns=InaccurateSolutionWarning),
    # settings of the call: checked before any work
    CallRow("solver_args_type", readme, lambda: [A0, B0], SAE, r"solver_args: expected a dict",
            call={"solver_args": [("eps", 1e-8)]}),
    CallRow("solver_args_key", readme, lambda: [A0, B0], SAE,
            r"solver_args: \['bogus'\] not understood by CLARABEL. Valid keys are",
            call={"solver_args": {"bogus": 1}}),
    CallRow("eps", readme, lambda: [A0, B0], SAE,
            r"solver_args\['eps'\]: expected a positive finite number for CLARABEL, received -1",
            call={"solver_args": {"eps": -1}}),
    CallRow("max_iters", readme, lambda: [A0, B0], SAE,
            r"solver_args\['max_iters'\]: expected a positive integer .*received -5 \(int\)",
            call={"solver_args": {"max_iters": -5}}),
    CallRow("acceleration_lookback", readme, lambda: [A0, B0], SAE,
            r"solver_args\['acceleration_lookback'\]: expected an integer for SCS, received 1.5",
            call={"solver_args": {"solve_method": "SCS", "acceleration_lookback": 1.5}}),
    CallRow("verbose", readme, lambda: [A0, B0], SAE,
            r"solver_args\['verbose'\]: expected True or False .*received 'yes'",
            call={"solver_args": {"verbose": "yes"}}),
    CallRow("native_setting_choice", readme, lambda: [A0, B0], SAE,
            r"CLARABEL rejects the settings \{'direct_solve_method': 'bogus'\}",
            call={"solver_args": {"direct_solve_method": "bogus"}}),
    CallRow("native_setting_kind", readme, lambda: [A0, B0], SAE,
            r"solver_args\['normalize'\]: expected True or False for SCS, received 'no'",
            call={"solver_args": {"solve_method": "SCS", "normalize": "no"}}),
    CallRow("solve_method", readme, lambda: [A0, B0], SAE,
            r"solver_args\['solve_method'\]: unknown solver 'GUROBIX'; choose one of",
            call={"solver_args": {"solve_method": "GUROBIX"}}),
    CallRow("solve_method_cones", psd_problem, lambda: [np.eye(2)], ProblemError,
            r"solver='ECOS' cannot solve this problem: it supports the cones",
            call={"solver_args": {"solve_method": "ECOS"}}),
    CallRow("on_failure", readme, lambda: [A0, B0], SAE,
            r"on_failure: expected 'raise' .* or 'nan' .*received 'ignore'",
            call={"on_failure": "ignore"}),
    CallRow("second_derivative", readme, lambda: [A0, B0], NotImplementedError,
            r"first (derivatives|order) only", probe="hessian"),
]


def _non_dpp():
    x = cp.Variable(2)
    a, b = cp.Parameter(name="alpha"), cp.Parameter(name="beta")
    return (cp.Problem(cp.Minimize(cp.sum_squares(x) + a * b * cp.sum(x))), [a, b], [x]), {}


def _non_dcp():
    x, p = cp.Variable(2), cp.Parameter(2)
    return (cp.Problem(cp.Maximize(cp.sum_squares(x) + p @ x), [x <= 1]), [p], [x]), {}


def _dgp(gp: bool, dpp: bool = True):
    x, a, b = cp.Variable(pos=True), cp.Parameter(pos=True), cp.Parameter(pos=True)
    objective = a * b * x if dpp else a**b * x
    prob = cp.Problem(cp.Minimize(objective + 1 / x))
    return (prob, [a, b], [x]), {"gp": gp}


def _with(**kwargs: Any) -> Callable[[], tuple[tuple, dict]]:
    return lambda: (readme()[0], kwargs)


def _readme_args(parameters=None, variables=None) -> Callable[[], tuple[tuple, dict]]:
    def build():
        prob, A, b, x = readme_problem()
        params = [A, b] if parameters is None else parameters(A, b)
        return (prob, params, [x] if variables is None else variables(x)), {}

    return build


def _special_problem(kind: str):
    def build():
        x = cp.Variable(2, integer=kind == "integer")
        p = cp.Parameter(2, complex=kind == "complex")
        cost = cp.real(p) @ x if kind == "complex" else p @ x
        return (cp.Problem(cp.Minimize(cost + cp.sum_squares(x))), [p], [x]), {}

    return build


def _qp_with_ecos():
    x, P = cp.Variable(2), cp.Parameter((2, 2), PSD=True)
    return (cp.Problem(cp.Minimize(cp.quad_form(x, P)), [cp.sum(x) == 1]), [P], [x]), {
        "solver": "ECOS"}


BUILD_ROWS: list[BuildRow] = [
    BuildRow("problem_type", lambda: (("minimize x", [], None), {}), ProblemError,
             r"problem: expected a cvxpy.Problem, received str"),
    BuildRow("not_dcp", _non_dcp, ProblemError,
             r"problem: is not convex \(DCP\): `maximize .*` breaks the DCP rules. Rewrite"),
    BuildRow("not_dpp", _non_dpp, ProblemError,
             r"is DCP but not DPP: `alpha [@*] beta` in `.*auxiliary parameter"),
    BuildRow("dgp_without_gp", lambda: _dgp(False), ProblemError,
             r"not convex \(DCP\).* It is log-log convex: pass gp=True"),
    BuildRow("gp_not_dgp", lambda: (readme()[0], {"gp": True}), ProblemError,
             r"is not log-log convex \(DGP\), as gp=True requires"),
    BuildRow("dgp_not_dpp", lambda: _dgp(True, dpp=False), ProblemError,
             r"is DGP but not DPP: .*auxiliary parameters"),
    BuildRow("integer_variable", _special_problem("integer"), ProblemError,
             r"boolean or integer variables.*Relax the integrality"),
    BuildRow("complex_problem", _special_problem("complex"), ProblemError,
             r"complex variables, parameters or constants.*real and imaginary parts"),
    BuildRow("quad_form_solver", _qp_with_ecos, ProblemError,
             r"quad_form\(x, P\) with a parametric P.*solver='CLARABEL' or 'SCS'"),
    BuildRow("cone_solver", lambda: (psd_problem()[0], {"solver": "ECOS"}), ProblemError,
             r"solver='ECOS' cannot solve this problem: it supports the cones"),
    BuildRow("parameters_type", _readme_args(lambda A, b: A), ProblemError,
             r"parameters: expected a list of cvxpy.Parameter, received Parameter. Wrap"),
    BuildRow("parameters_entry", _readme_args(lambda A, b: [A, 3.0]), ProblemError,
             r"parameters: 3.0 is a float, not a cvxpy.Parameter"),
    BuildRow("missing_parameter", _readme_args(lambda A, b: [A]), ProblemError,
             r"parameters: the problem's parameters \['b'\] are missing"),
    BuildRow("extra_parameter", _readme_args(lambda A, b: [A, b, cp.Parameter(name="c")]),
             ProblemError, r"parameters: \['c'\] do not appear in the problem"),
    BuildRow("duplicated_parameter", _readme_args(lambda A, b: [A, b, A]), ProblemError,
             r"parameters: \['A'\] appear more than once"),
    BuildRow("variables_type", _readme_args(variables=lambda x: x), ProblemError,
             r"variables: expected a list of cvxpy.Variable, received Variable. Wrap"),
    BuildRow("variables_entry", _readme_args(variables=lambda x: [x + 1]), ProblemError,
             r"variables: .* is a AddExpression, not a cvxpy.Variable"),
    BuildRow("unknown_variable", _readme_args(variables=lambda x: [cp.Variable(2, name="y")]),
             ProblemError, r"variables: y is neither a variable of the problem nor the dual"),
    BuildRow("no_outputs", _readme_args(variables=lambda x: []), ProblemError,
             r"variables: received an empty list.*variables=None"),
    BuildRow("solver_name", _with(solver="GUROBIX"), SAE,
             r"solver: unknown solver 'GUROBIX'; choose one of \['CLARABEL', 'SCS', 'ECOS', "
             r"'NATIVE'\]"),
    BuildRow("solver_args_key", _with(solver_args={"bogus": 1}), SAE,
             r"solver_args: \['bogus'\] not understood by CLARABEL"),
    BuildRow("solver_args_value", _with(solver_args={"max_iters": -5}), SAE,
             r"solver_args\['max_iters'\]: expected a positive integer"),
    BuildRow("solver_args_native", _with(solver="ECOS", solver_args={"abstol": "tight"}), SAE,
             r"solver_args\['abstol'\]: expected a positive finite number for ECOS, "
             r"received 'tight'"),
    BuildRow("solver_args_type", _with(solver_args=["eps"]), SAE, r"solver_args: expected a dict"),
    BuildRow("refine", _with(refine="always"), SAE,
             r"refine: expected True, False or 'auto', received 'always'"),
    BuildRow("on_failure", _with(on_failure="skip"), SAE,
             r"on_failure: expected 'raise' .*received 'skip'"),
    BuildRow("linear_solver", _with(linear_solver="lu"), SAE,
             r"linear_solver: expected an AbstractLinearSolver such as DenseLU\(\)"),
]


def row_id(row: CallRow | BuildRow) -> str:
    return row.kind
