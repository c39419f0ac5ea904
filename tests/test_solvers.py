"""Solver backends: our cone conventions, KKT conditions, statuses, settings, registry."""

from __future__ import annotations

import subprocess
import sys

import cvxpy as cp
import numpy as np
import pytest
import scipy.sparse as sp

from convexlayers._errors import SolverArgumentError
from convexlayers.cones import ConeDims, svec_size
from convexlayers.solvers import (
    DEFAULT_SOLVER,
    ConeProgram,
    SolverStatus,
    available_solvers,
    get_solver,
)

ALL = ["CLARABEL", "SCS", "ECOS"]
SOLVERS = [
    pytest.param(
        name, marks=pytest.mark.skipif(name not in available_solvers(), reason="not installed")
    )
    for name in ALL
]
# Settings and KKT tolerance (relative to the data's scale) per backend.
ARGS = {"CLARABEL": {}, "SCS": {"eps": 1e-10, "max_iters": 100_000}, "ECOS": {}}
TOL = {"CLARABEL": 1e-7, "SCS": 1e-5, "ECOS": 1e-7}
X_TOL = {"CLARABEL": 1e-4, "SCS": 1e-5, "ECOS": 1e-4}  # agreement with CVXPY
SINGLE_KIND = {
    "zero": (ConeDims(zero=2, nonneg=4), 4),
    "nonneg": (ConeDims(nonneg=6), 3),
    "soc": (ConeDims(soc=(3, 4, 1)), 4),
    "psd": (ConeDims(psd=(3, 2)), 4),
    "exp": (ConeDims(exp=3), 4),
    "power": (ConeDims(power=(0.3, 0.5, 0.8)), 4),
}
MIXED = ConeDims(zero=2, nonneg=3, soc=(3, 4), psd=(3,), exp=2, power=(0.3, 0.7))
MIXED_ECOS = ConeDims(zero=2, nonneg=3, soc=(3, 4), exp=2)


def blocks(dims: ConeDims):
    """Yield (kind, slice, parameter) for every nonempty cone block, in row order."""
    sizes = [("zero", dims.zero, None), ("nonneg", dims.nonneg, None)]
    sizes += [("soc", k, k) for k in dims.soc] + [("psd", svec_size(k), k) for k in dims.psd]
    sizes += [("exp", 3, None)] * dims.exp + [("power", 3, a) for a in dims.power]
    start = 0
    for kind, size, param in sizes:
        if size:
            yield kind, slice(start, start + size), param
        start += size


def smat(v: np.ndarray, k: int) -> np.ndarray:
    """The symmetric matrix of an svec (upper triangle, column-major, sqrt(2))."""
    rows, cols = np.triu_indices(k)
    order = np.lexsort((rows, cols))  # column-major
    X = np.zeros((k, k))
    X[rows[order], cols[order]] = v
    X = (X + X.T) / np.sqrt(2)
    X[np.diag_indices(k)] /= np.sqrt(2)
    return X


def interior(dims: ConeDims, rng: np.random.Generator, dual: bool) -> np.ndarray:
    """A point strictly inside K (or K* when ``dual``)."""
    out = np.zeros(dims.size)
    for kind, rows, a in blocks(dims):
        size = rows.stop - rows.start
        u, v = rng.uniform(0.5, 1.5, 2)
        if kind == "zero":
            out[rows] = rng.standard_normal(size) if dual else 0.0
        elif kind == "nonneg":
            out[rows] = rng.uniform(0.5, 1.5, size)
        elif kind == "soc":
            z = rng.standard_normal(size - 1)
            out[rows] = np.concatenate(([np.linalg.norm(z) + u], z))
        elif kind == "psd":
            B = rng.standard_normal((a, a))
            X = B @ B.T / a + np.eye(a)
            out[rows] = [
                X[i, j] * (1 if i == j else np.sqrt(2)) for j in range(a) for i in range(j + 1)
            ]
        elif kind == "exp" and not dual:  # y exp(x / y) < z
            x = rng.standard_normal()
            out[rows] = [x, u, u * np.exp(x / u) + v]
        elif kind == "exp":  # -u exp(v / u) < e w, u < 0
            t = rng.standard_normal()
            out[rows] = [-u, t, u * np.exp(-t / u) / np.e + v]
        else:  # power cone and its dual (x / a, y / (1 - a) for the dual)
            scale = (u / a) ** a * (v / (1 - a)) ** (1 - a) if dual else u**a * v ** (1 - a)
            out[rows] = [u, v, rng.uniform(-0.5, 0.5) * scale]
    return out


def assert_in_cone(v: np.ndarray, dims: ConeDims, tol: float, dual: bool) -> None:
    """Assert v is in K (or K*) up to ``tol``, block by block."""
    for kind, rows, a in blocks(dims):
        w = v[rows]
        if kind == "zero":
            assert dual or np.abs(w).max() <= tol, w
        elif kind == "nonneg":
            assert w.min() >= -tol, w
        elif kind == "soc":
            assert np.linalg.norm(w[1:]) <= w[0] + tol, w
        elif kind == "psd":
            assert np.linalg.eigvalsh(smat(w, a)).min() >= -tol, w
        elif kind == "exp" and not dual:
            x, y, z = w
            ok = y * np.exp(min(x / y, 700)) <= z + tol if y > tol else x <= tol
            assert ok and y >= -tol and z >= -tol, w
        elif kind == "exp":
            u, t, z = w
            ok = -u * np.exp(min(t / u, 700)) <= np.e * z + tol if u < -tol else t >= -tol
            assert ok and u <= tol and z >= -tol, w
        else:
            x, y, z = w
            sx, sy = (a, 1 - a) if dual else (1, 1)
            assert min(x, y) >= -tol, w
            assert (max(x, 0) / sx) ** a * (max(y, 0) / sy) ** (1 - a) >= abs(z) - tol, w


def random_program(dims: ConeDims, n: int, seed: int, quadratic: bool = False) -> ConeProgram:
    """A feasible, bounded program: primal (x0, s0) and dual y0 strictly feasible."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((dims.size, n))
    x0 = rng.standard_normal(n)
    P = None
    q = -A.T @ interior(dims, rng, dual=True)
    if quadratic:
        B = rng.standard_normal((n, n))
        full = B @ B.T / n
        P = sp.csc_array(np.triu(full))
        q -= full @ x0
    return ConeProgram(P, q, sp.csc_array(A), A @ x0 + interior(dims, rng, dual=False), dims)


def cvxpy_x(program: ConeProgram) -> np.ndarray:
    """x solved by CVXPY (its own canonicalization) from the same program."""
    x = cp.Variable(program.n)
    s = program.b - program.A.toarray() @ x
    constraints = []
    for kind, rows, a in blocks(program.dims):
        w = s[rows]
        if kind == "zero":
            constraints.append(w == 0)
        elif kind == "nonneg":
            constraints.append(w >= 0)
        elif kind == "soc":
            constraints.append(cp.SOC(w[0], w[1:]))
        elif kind == "psd":
            X = cp.Variable((a, a), symmetric=True)
            svec = [X[i, j] * (1 if i == j else np.sqrt(2)) for j in range(a) for i in range(j + 1)]
            constraints += [cp.PSD(X), cp.hstack(svec) == w]
        elif kind == "exp":
            constraints.append(cp.ExpCone(w[0], w[1], w[2]))
        elif kind == "power":
            constraints.append(cp.PowCone3D(w[0], w[1], w[2], a))
    objective = program.q @ x
    if program.P is not None:
        upper = program.P.toarray()
        objective += 0.5 * cp.quad_form(x, upper + upper.T - np.diag(np.diag(upper)))
    cp.Problem(cp.Minimize(objective), constraints).solve(
        solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11
    )
    return x.value


def solve_and_check(name: str, program: ConeProgram) -> None:
    """Solve with backend ``name``; check KKT, cone membership, and x against CVXPY."""
    solver = get_solver(name)
    result = solver.solve(program, solver.settings(ARGS[name]))
    assert result.status == SolverStatus.OPTIMAL, result.message
    x, y, s, tol = result.x, result.y, result.s, TOL[name]
    for v, size in ((x, program.n), (y, program.m), (s, program.m)):
        assert v.dtype == np.float64 and v.shape == (size,)
        assert v.flags.c_contiguous and v.flags.owndata
    P = sp.csc_array((program.n, program.n)) if program.P is None else program.P
    Px = P @ x + P.T @ x - P.diagonal() * x
    scale = 1 + max(np.abs(program.q).max(), np.abs(program.b).max())
    assert np.linalg.norm(Px + program.q + program.A.T @ y) <= tol * scale
    assert np.linalg.norm(program.A @ x + s - program.b) <= tol * scale
    assert abs(s @ y) <= tol * scale
    assert_in_cone(s, program.dims, tol * scale, dual=False)
    assert_in_cone(y, program.dims, tol * scale, dual=True)
    np.testing.assert_allclose(x, cvxpy_x(program), atol=X_TOL[name] * scale)


CASES = [
    pytest.param(name, kind, id=f"{name}-{kind}", marks=param.marks)
    for param in SOLVERS
    for name in param.values
    for kind in SINGLE_KIND
    if not (name == "ECOS" and kind in {"psd", "power"})
]


@pytest.mark.parametrize(("name", "kind"), CASES)
def test_single_cone_kind(name: str, kind: str) -> None:
    dims, n = SINGLE_KIND[kind]
    solve_and_check(name, random_program(dims, n, seed=list(SINGLE_KIND).index(kind)))


@pytest.mark.parametrize("name", SOLVERS)
def test_mixed_cones(name: str) -> None:
    dims = MIXED_ECOS if name == "ECOS" else MIXED
    solve_and_check(name, random_program(dims, 10, seed=1))


@pytest.mark.parametrize("name", ["CLARABEL", "SCS"])
def test_quadratic_objective(name: str) -> None:
    dims = ConeDims(zero=1, nonneg=4, soc=(3,), psd=(2,), exp=1, power=(0.4,))
    solve_and_check(name, random_program(dims, 6, seed=2, quadratic=True))


def test_scs_psd_permutation_is_upper_row_major() -> None:
    from convexlayers.solvers._scs import psd_permutation

    # SCS rows (0,0) (1,0) (2,0) (1,1) (2,1) (2,2) are our rows 0, 1, 3, 2, 4, 5.
    np.testing.assert_array_equal(psd_permutation(3), [0, 1, 3, 2, 4, 5])


def _lp(A: list[list[float]], b: list[float], q: list[float]) -> ConeProgram:
    return ConeProgram(
        None, np.array(q), sp.csc_array(np.array(A)), np.array(b), ConeDims(nonneg=len(b))
    )


@pytest.mark.parametrize(
    ("program", "expected"),
    [
        (_lp([[-1.0], [1.0]], [-1.0, 0.0], [1.0]), "infeasible"),  # x >= 1, x <= 0
        (_lp([[1.0, 0.0], [0.0, -1.0]], [0.0, 0.0], [1.0, 1.0]), "unbounded"),  # min x, x <= 0
    ],
    ids=["infeasible", "unbounded"],
)
@pytest.mark.parametrize("name", SOLVERS)
def test_infeasible_and_unbounded(name: str, program: ConeProgram, expected: str) -> None:
    result = get_solver(name).solve(program, {})
    allowed = {SolverStatus(expected), SolverStatus(f"{expected}_inaccurate")}
    assert result.status in (allowed if name == "SCS" else {SolverStatus(expected)})
    assert result.x is None and result.y is None and result.s is None


@pytest.mark.parametrize("name", SOLVERS)
def test_inputs_not_mutated(name: str) -> None:
    dims = MIXED_ECOS if name == "ECOS" else MIXED
    program = random_program(dims, 10, seed=3, quadratic=name != "ECOS")
    arrays = [program.q, program.b, program.A.data, program.A.indices, program.A.indptr]
    arrays += [] if program.P is None else [program.P.data]
    before = [a.copy() for a in arrays]
    result = get_solver(name).solve(program, {})
    assert result.status.has_solution
    for a, b in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize(("n", "m"), [(0, 1), (2, 0), (0, 0)])
def test_empty_dimensions(name: str, n: int, m: int) -> None:
    program = ConeProgram(None, np.zeros(n), sp.csc_array((m, n)), np.ones(m), ConeDims(nonneg=m))
    result = get_solver(name).solve(program, {})
    assert result.status == SolverStatus.OPTIMAL
    assert result.x.shape == (n,) and result.y.shape == result.s.shape == (m,)
    np.testing.assert_allclose(result.s, np.ones(m), atol=1e-6)


@pytest.mark.parametrize("name", SOLVERS)
@pytest.mark.parametrize(
    "args", [{"eps": 1e-8}, {"eps": 1e-8, "max_iters": 10000, "acceleration_lookback": 0}]
)
def test_cvxpylayers_settings_accepted(name: str, args: dict, capfd) -> None:
    solver = get_solver(name)
    result = solver.solve(random_program(ConeDims(nonneg=5, soc=(3,)), 3, 4), solver.settings(args))
    assert result.status == SolverStatus.OPTIMAL
    assert capfd.readouterr().out == ""  # quiet unless verbose=True


@pytest.mark.parametrize(
    ("name", "args", "status"),
    [
        ("CLARABEL", {"max_iter": 3}, SolverStatus.MAX_ITERATIONS),
        ("ECOS", {"max_iters": 2}, SolverStatus.MAX_ITERATIONS),
        # SCS returns its last iterate as "solved (inaccurate - reached max_iters)".
        ("SCS", {"max_iters": 5, "eps_abs": 1e-12}, SolverStatus.OPTIMAL_INACCURATE),
    ],
)
def test_iteration_limit(name: str, args: dict, status: SolverStatus) -> None:
    pytest.importorskip(name.lower())
    solver = get_solver(name)
    dims = MIXED_ECOS if name == "ECOS" else MIXED
    result = solver.solve(random_program(dims, 10, seed=5), solver.settings(args))
    assert result.iterations <= max(args.values())
    assert result.status == status


def test_clarabel_translation_and_bad_value() -> None:
    solver = get_solver("clarabel")
    native = solver.settings({"eps": 1e-6, "max_iters": 7, "acceleration_lookback": 0})
    assert native["tol_gap_abs"] == native["tol_feas"] == 1e-6 and native["max_iter"] == 7
    assert "acceleration_lookback" not in native
    program = random_program(ConeDims(nonneg=3), 2, 6)
    with pytest.raises(SolverArgumentError, match="max_iter"):
        solver.solve(program, solver.settings({"max_iter": "many"}))


@pytest.mark.parametrize("name", SOLVERS)
def test_unknown_setting_is_named(name: str) -> None:
    with pytest.raises(SolverArgumentError, match="no_such_option"):
        get_solver(name).settings({"eps": 1e-8, "no_such_option": 1})


def test_ecos_rejects_what_it_cannot_solve() -> None:
    pytest.importorskip("ecos")
    solver = get_solver("ECOS")
    with pytest.raises(ValueError, match="psd"):
        solver.solve(random_program(ConeDims(psd=(2,)), 2, 7), {})
    with pytest.raises(ValueError, match="quadratic"):
        solver.solve(random_program(ConeDims(nonneg=3), 2, 7, quadratic=True), {})


def test_registry_names() -> None:
    assert DEFAULT_SOLVER == "CLARABEL" and DEFAULT_SOLVER in available_solvers()
    aliases = {
        "clarabel": "CLARABEL",
        "Scs": "SCS",
        "SCSSolver": "SCS",
        "clarabelsolver": "CLARABEL",
    }
    for alias, name in aliases.items():
        assert get_solver(alias).name == name
    with pytest.raises(SolverArgumentError, match=r"'nope'.*CLARABEL.*SCS.*ECOS"):
        get_solver("nope")


def test_missing_package_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ecos", None)  # find_spec and import now fail
    assert "ECOS" not in available_solvers()
    with pytest.raises(SolverArgumentError, match=r"pip install convexlayers\[ecos\]"):
        get_solver("ecos")


def test_backends_load_lazily() -> None:
    """A backend module is imported on first use only (cvxpy itself imports the solvers)."""
    code = (
        "import sys, convexlayers, convexlayers.solvers as s; s.available_solvers();"
        "mods = ['convexlayers.solvers._' + k for k in ('scs', 'ecos', 'clarabel')];"
        "before = [m for m in mods if m in sys.modules]; s.get_solver('SCS');"
        "print(before, [m for m in mods if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] ['convexlayers.solvers._scs']"
