"""Random DPP problems with a planted solution, for the property tests.

A drawn problem is

    minimize    f(x) + qᵀx                 f: atoms of one family, plus μ/2 ‖x‖²
    subject to  gⱼ(x) ≤ hⱼ  (or ≥)         atoms, linear rows, boxes
                M₀ + Σᵢ xᵢ Mᵢ ⪰ 0          (PSD family)
                A x = b

and its solution is planted rather than computed: draw x*, choose which constraint
entries are active, pick duals λ ∈ [0.5, 2] on those and slacks of at least 0.3 on
the others, set h and b so that x* is feasible with exactly that active set, and
solve stationarity for the linear cost q. The KKT conditions then hold at x* by
construction, so x* is optimal; it is unique (μ > 0, or for LPs a vertex with
n active rows); complementarity is strict and the active gradients are linearly
independent (checked, else redrawn), so the solution map is differentiable at the
drawn values. Gradients of the atoms are taken by a fourth-order central
difference of CVXPY's own expression values (error ~1e-12), so x* and the duals are
exact to ~1e-11. Log-log convex problems are in :mod:`problems_dgp`.

Shapes and atom choices are drawn by hypothesis (so failures shrink); numbers
come from a generator seeded by a drawn seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
from hypothesis import strategies as st

# Family -> (objective atoms, constraint atoms). "linear" and "box" constraints are
# open to every family.
ATOMS = {
    "lp": ((), ("linear", "box")),
    "qp": (("sum_squares", "quad_form"), ("sum_squares",)),
    "socp": (("norm2",), ("norm2",)),
    "exp": (("log_sum_exp", "neg_entr", "logistic", "exp"), ("log_sum_exp", "exp")),
    "pow": (("power", "pnorm", "neg_geo_mean", "neg_sqrt"), ("geo_mean", "pnorm", "sqrt")),
    "psd": (("lambda_max", "neg_log_det"), ("lambda_max", "lmi")),
    "dgp": (("monomial", "sqrt_monomial"), ("posynomial", "monomial")),  # problems_dgp.py
}
# What a backend cannot take: ECOS has no P (CVXPY lifts sum_squares into an SOC, but
# not a parametric quad_form), no power and no PSD cones. NATIVE (the batched
# interior-point method) takes zero, nonnegative, second-order and PSD cones (not the
# exponential cone of neg_log_det).
ECOS_UNSUPPORTED = frozenset({"quad_form", "pow", "psd"})
NATIVE_FAMILIES = frozenset({"lp", "qp", "socp", "psd"})


@dataclass(frozen=True)
class Spec:
    """What hypothesis draws: the problem's structure, and a seed for its numbers."""

    family: str
    n: int
    objective: tuple[str, ...]
    constraints: tuple[str, ...]
    equality: bool
    strong: str  # "none", "const" (μ = 1) or "param" (μ a nonneg parameter)
    batch: int | None
    duals: bool
    seed: int


@st.composite
def specs(draw, family: str) -> Spec:
    """Problems of one family: 2-4 variables, 0-2 constraints, batched or not."""
    objective_atoms, constraint_atoms = ATOMS[family]
    lp, gp = family == "lp", family == "dgp"
    n = draw(st.integers(2, 4))
    objective = () if lp else tuple(draw(st.lists(
        st.sampled_from(objective_atoms), min_size=int(not gp), max_size=2, unique=True)))
    pool = sorted({*constraint_atoms} if gp else {*constraint_atoms, "linear", "box"})
    constraints = tuple(draw(st.lists(st.sampled_from(pool), min_size=int(lp), max_size=2)))
    if lp and "linear" not in constraints:
        constraints = ("linear", *constraints)
    return Spec(
        family=family,
        n=n,
        objective=objective,
        constraints=constraints,
        equality=draw(st.booleans()),
        strong="none" if lp or gp else draw(st.sampled_from(["const", "param"])),
        batch=draw(st.sampled_from([None, 1, 3])),
        duals=draw(st.booleans()),
        seed=draw(st.integers(0, 2**32 - 1)),
    )


@dataclass
class Drawn:
    """A built problem: layer arguments, values and the planted outputs.

    ``values`` and ``expected`` have a leading batch dimension when ``spec.batch`` is
    set; a structural parameter (a matrix, μ, ...) may then still be unbatched, shared
    by every element. ``expected`` are x* and the planted duals, in CVXPY's sign
    conventions (``con.dual_value``).
    """

    spec: Spec
    problem: cp.Problem
    parameters: list[cp.Parameter]
    outputs: list
    values: list[np.ndarray]
    expected: list[np.ndarray]
    gp: bool = False
    solvers: tuple[str, ...] = ("CLARABEL", "SCS", "ECOS")


def jacobian(fun: Callable[[np.ndarray], np.ndarray], x0: np.ndarray,
             step: float = 1e-4) -> np.ndarray:
    """(size, n) Jacobian of ``fun`` at x0, fourth-order central differences."""
    cols = []
    for i in range(x0.size):
        e = np.zeros_like(x0)
        e[i] = step
        f = [np.ravel(fun(x0 + k * e)) for k in (-2, -1, 1, 2)]
        cols.append((f[0] - 8 * f[1] + 8 * f[2] - f[3]) / (12 * step))
    return np.stack(cols, axis=1)


def licq(rows: list[np.ndarray]) -> bool:
    """Active constraint gradients (rows) are well linearly independent."""
    if not rows:
        return True
    G = np.vstack(rows)
    G = G / np.linalg.norm(G, axis=1, keepdims=True)
    return G.shape[0] <= G.shape[1] and np.linalg.svd(G, compute_uv=False)[-1] > 0.05


@dataclass
class Ineq:
    """g(x) ≤ h (sense +1) or g(x) ≥ h (sense -1), h planted."""

    expr: cp.Expression
    rhs: cp.Parameter
    sense: int
    constraint: cp.Constraint
    nonneg_rhs: bool = False
    active: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))


@dataclass
class LMI:
    """M₀ + Σᵢ xᵢ Mᵢ ⪰ 0 with M₀ planted: active with a rank-one dual, or strictly feasible."""

    M0: cp.Parameter
    Ms: list[np.ndarray]
    constraint: cp.Constraint
    active: bool = False


@dataclass
class Eq:
    """e(x) = b, b planted (e affine; a monomial for gp=True)."""

    expr: cp.Expression
    rhs: cp.Parameter
    constraint: cp.Constraint


def random_symmetric(rng, k):
    S = rng.standard_normal((k, k))
    return 0.5 * (S + S.T)


def random_spd(rng, k, low=0.5, high=2.0):
    U = np.linalg.qr(rng.standard_normal((k, k)))[0]
    S = (U * rng.uniform(low, high, k)) @ U.T
    return 0.5 * (S + S.T)


class Builder:
    """Builds one drawn problem and plants its solution for every batch element."""

    gp = False

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.rng = np.random.default_rng(spec.seed)
        self.x = cp.Variable(spec.n, name="x")
        self.parameters: list[cp.Parameter] = []
        self.samplers: dict[int, Callable] = {}
        self.hooks: list[Callable] = []
        self.records: list[Ineq | LMI | Eq] = []
        self.positive = False
        self.p = int(spec.equality)

    # -- parameters ----------------------------------------------------------------
    def structural(self, shape, sampler, **attrs) -> cp.Parameter:
        """A parameter drawn independently of x* (a matrix, μ, ...)."""
        p = cp.Parameter(shape, **attrs)
        self.parameters.append(p)
        self.samplers[p.id] = sampler
        return p

    def planted(self, shape=(), **attrs) -> cp.Parameter:
        """A parameter set by the planting (q, h, b, ...)."""
        p = cp.Parameter(shape, **attrs)
        self.parameters.append(p)
        return p

    def matrix(self, k: int) -> cp.Parameter:
        n = self.spec.n
        return self.structural((k, n), lambda r: 0.5 * r.standard_normal((k, n)))

    def residual(self, k: int) -> cp.Expression:
        """F x - g, with g planted so that every entry at x* has magnitude in [0.5, 1.5]
        (away from the kinks of |·| inside pnorm, and from 0 for norm2)."""
        F, g = self.matrix(k), self.planted(k)

        def hook(xs, rng):
            g.value = F.value @ xs - rng.uniform(0.5, 1.5, k) * rng.choice([-1.0, 1.0], k)

        self.hooks.append(hook)
        return F @ self.x - g

    def affine_matrix(self, k: int, planted: bool) -> tuple[cp.Expression, cp.Parameter, list]:
        """M₀ + Σᵢ xᵢ Mᵢ, symmetric, with M₀ a symmetric parameter and Mᵢ constants."""
        Ms = [random_symmetric(self.rng, k) for _ in range(self.spec.n)]
        if planted:
            M0 = self.planted((k, k), symmetric=True)
        else:
            M0 = self.structural((k, k), lambda r: random_symmetric(r, k), symmetric=True)
        return M0 + sum(self.x[i] * M for i, M in enumerate(Ms)), M0, Ms

    # -- atoms -----------------------------------------------------------------------
    def objective_atom(self, name: str) -> cp.Expression:
        x, n = self.x, self.spec.n
        self.positive |= name in {"neg_entr", "power", "neg_geo_mean", "neg_sqrt"}
        if name == "sum_squares":
            g = self.structural(n + 1, lambda r: r.standard_normal(n + 1))
            return cp.sum_squares(self.matrix(n + 1) @ x - g)
        if name == "quad_form":
            Q = self.structural((n, n), lambda r: random_spd(r, n), PSD=True)
            return 0.5 * cp.quad_form(x, Q)
        if name == "neg_log_det":
            M, M0, Ms = self.affine_matrix(3, planted=True)

            def hook(xs, rng):  # M(x*) positive definite
                M0.value = random_spd(rng, 3) - sum(xi * Mi for xi, Mi in zip(xs, Ms, strict=True))

            self.hooks.append(hook)
            return -cp.log_det(M)
        return {
            "norm2": lambda: cp.norm2(self.residual(3)),
            "log_sum_exp": lambda: cp.log_sum_exp(self.matrix(3) @ x),
            "neg_entr": lambda: -cp.sum(cp.entr(x)),
            "logistic": lambda: cp.sum(cp.logistic(self.matrix(3) @ x)),
            "exp": lambda: cp.sum(cp.exp(self.matrix(2) @ x)),
            "power": lambda: cp.sum(cp.power(x, 1.5, approx=False)),
            "pnorm": lambda: cp.pnorm(self.residual(3), 3, approx=False),
            "neg_geo_mean": lambda: -cp.geo_mean(x, approx=False),
            "neg_sqrt": lambda: -cp.sum(cp.power(x, 0.5, approx=False)),
            "lambda_max": lambda: cp.lambda_max(self.affine_matrix(3, planted=False)[0]),
        }[name]()

    def ineq(self, expr, sense=1, nonneg_rhs=False) -> None:
        h = self.planted(expr.shape, nonneg=nonneg_rhs)
        con = expr <= h if sense > 0 else expr >= h
        self.records.append(Ineq(expr, h, sense, con, nonneg_rhs))

    def constraint_atom(self, name: str) -> None:
        x, n = self.x, self.spec.n
        self.positive |= name in {"geo_mean", "sqrt"}
        if name == "linear":
            k = n + 1 if self.spec.family == "lp" else int(self.rng.integers(1, n + 1))
            self.ineq(self.matrix(k) @ x)
        elif name == "box":
            self.ineq(x, sense=-1)
            self.ineq(x)
        elif name == "lmi":
            M, M0, Ms = self.affine_matrix(3, planted=True)
            self.records.append(LMI(M0, Ms, M >> 0))
        elif name in ("geo_mean", "sqrt"):
            g = cp.geo_mean(x, approx=False) if name == "geo_mean" else cp.sum(
                cp.power(x, 0.5, approx=False))
            self.ineq(g, sense=-1, nonneg_rhs=True)
        else:
            self.ineq({
                "sum_squares": lambda: cp.sum_squares(self.matrix(2) @ x - 1),
                "norm2": lambda: cp.norm2(self.residual(3)),
                "log_sum_exp": lambda: cp.log_sum_exp(self.matrix(3) @ x),
                "exp": lambda: cp.sum(cp.exp(self.matrix(2) @ x)),
                "pnorm": lambda: cp.pnorm(self.residual(3), 3, approx=False),
                "lambda_max": lambda: cp.lambda_max(self.affine_matrix(3, planted=False)[0]),
            }[name]())

    def assemble(self) -> None:
        """The CVXPY problem: f, its strongly convex term, qᵀx and the constraints."""
        spec, x = self.spec, self.x
        terms = [self.objective_atom(a) for a in spec.objective]
        if spec.strong == "const":
            terms.append(0.5 * cp.sum_squares(x))
        elif spec.strong == "param":
            mu = self.structural((), lambda r: np.array(r.uniform(0.5, 1.5)), nonneg=True)
            terms.append(mu / 2 * cp.sum_squares(x))
        for name in spec.constraints:
            self.constraint_atom(name)
        if spec.equality:
            A = self.structural((1, spec.n), lambda r: r.standard_normal((1, spec.n)))
            b = self.planted(1)
            self.records.append(Eq(A @ x, b, A @ x == b))
        self.f = sum(terms[1:], terms[0]) if terms else cp.Constant(0.0)
        self.q = self.planted(spec.n)
        self.problem = cp.Problem(cp.Minimize(self.f + self.q @ x),
                                  [r.constraint for r in self.records])

    # -- planting (overridden for gp=True, which plants in log space) ---------------
    def _values_of(self, expr: cp.Expression) -> Callable[[np.ndarray], np.ndarray]:
        def fun(z):
            self.x.value = z
            return np.asarray(expr.value, dtype=float)

        return fun

    def _point(self, rng) -> np.ndarray:
        """x* (entries of magnitude 0.5 to 1.5, positive where an atom needs it)."""
        xs = rng.uniform(0.5, 1.5, self.spec.n)
        return xs if self.positive else xs * rng.choice([-1.0, 1.0], self.spec.n)

    def _rhs(self, h: np.ndarray) -> np.ndarray:
        return h

    def _set_cost(self, q: np.ndarray) -> None:
        self.q.value = q

    def _primal(self, point: np.ndarray) -> np.ndarray:
        return point

    def _choose_active(self, rng) -> None:
        """Mark which entries are active: n - p of them for an LP (a vertex), else 0..n - p."""
        slots = [(r, i) for r in self.records if isinstance(r, Ineq) for i in range(r.expr.size)]
        slots += [(r, 0) for r in self.records if isinstance(r, LMI)]
        room = min(self.spec.n - self.p, len(slots))
        count = room if self.spec.family == "lp" else int(rng.integers(0, room + 1))
        chosen = {int(k) for k in rng.choice(len(slots), count, replace=False)}
        for r in self.records:
            if isinstance(r, Ineq):
                r.active = np.zeros(r.expr.size, bool)
            elif isinstance(r, LMI):
                r.active = False
        for k in chosen:
            r, i = slots[k]
            if isinstance(r, Ineq):
                r.active[i] = True
            else:
                r.active = True

    def _plant_ineq(self, r: Ineq, xs, rng, grad, rows) -> np.ndarray:
        fun = self._values_of(r.expr)
        g0, J = np.ravel(fun(xs)), jacobian(fun, xs)
        size = g0.size
        lam = np.where(r.active, rng.uniform(0.5, 2.0, size), 0.0)
        if r.nonneg_rhs:  # g ≥ h ≥ 0: an inactive h is a fraction of g(x*) > 0
            h = np.where(r.active, g0, g0 * rng.uniform(0.4, 0.7, size))
        else:
            h = g0 + r.sense * np.where(r.active, 0.0, rng.uniform(0.3, 1.0, size) * (1 + abs(g0)))
        r.rhs.value = self._rhs(h).reshape(r.rhs.shape)
        grad += r.sense * (J.T @ lam)
        rows.extend(J[r.active])
        return lam.reshape(r.expr.shape)

    def _plant_lmi(self, r: LMI, xs, rng, grad, rows) -> np.ndarray:
        k = r.Ms[0].shape[0]
        if r.active:  # M(x*) = U diag(0, d) Uᵀ, Z = λ u uᵀ: ranks (k - 1) + 1 = k
            U = np.linalg.qr(rng.standard_normal((k, k)))[0]
            u, d = U[:, 0], np.concatenate(([0.0], rng.uniform(0.5, 2.0, k - 1)))
            R, Z = (U * d) @ U.T, rng.uniform(0.5, 2.0) * np.outer(u, u)
            rows.append(np.array([u @ M @ u for M in r.Ms]))
        else:
            R, Z = random_spd(rng, k), np.zeros((k, k))
        M0 = R - sum(xi * M for xi, M in zip(xs, r.Ms, strict=True))
        r.M0.value = 0.5 * (M0 + M0.T)
        grad -= np.array([np.sum(Z * M) for M in r.Ms])
        return Z

    def _plant_once(self, xs, rng) -> list[np.ndarray] | None:
        """Set h, b, M₀ and q for the solution x*; the planted duals, or None (not LICQ)."""
        for hook in self.hooks:
            hook(xs, rng)
        self._choose_active(rng)
        grad = jacobian(self._values_of(self.f), xs)[0]
        rows, duals = [], []
        for r in self.records:
            if isinstance(r, Ineq):
                duals.append(self._plant_ineq(r, xs, rng, grad, rows))
            elif isinstance(r, LMI):
                duals.append(self._plant_lmi(r, xs, rng, grad, rows))
            else:
                fun = self._values_of(r.expr)
                nu, J = rng.standard_normal(r.rhs.shape), jacobian(fun, xs)
                r.rhs.value = self._rhs(fun(xs)).reshape(r.rhs.shape)
                grad += J.T @ np.ravel(nu)
                rows.extend(J)
                duals.append(nu)
        self.x.value = None
        if not licq(rows) or (self.spec.family == "lp" and len(rows) != self.spec.n):
            return None
        self._set_cost(-grad)
        return duals

    def plant(self, rng) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Parameter values and expected outputs of one element (structural values set)."""
        for _ in range(50):
            point = self._point(rng)
            duals = self._plant_once(point, rng)
            if duals is not None:
                xs = self._primal(point)
                expected = [xs, *duals] if self.spec.duals else [xs]
                return [np.array(p.value, dtype=float) for p in self.parameters], expected
        raise RuntimeError(f"could not plant a nondegenerate solution for {self.spec}")

    def draw(self) -> Drawn:
        """Values for every batch element; structural parameters shared or not, at random."""
        spec, rng = self.spec, self.rng
        B = spec.batch or 1
        shared = {pid: spec.batch is None or rng.random() < 0.5 for pid in self.samplers}
        first = {pid: s(rng) for pid, s in self.samplers.items()}
        values, expected = [], []
        for b in range(B):
            for p in self.parameters:
                if p.id in self.samplers:
                    p.value = first[p.id] if b == 0 or shared[p.id] else self.samplers[p.id](rng)
            v, e = self.plant(rng)
            values.append(v)
            expected.append(e)
        batched = [spec.batch is not None and not shared.get(p.id, False)
                   for p in self.parameters]
        if spec.batch is None:
            vals, exp = values[0], expected[0]
        else:
            vals = [np.stack([v[k] for v in values]) if batched[k] else values[0][k]
                    for k in range(len(self.parameters))]
            exp = [np.stack([e[k] for e in expected]) for k in range(len(expected[0]))]
        outputs = [self.x]
        if spec.duals:
            outputs += [r.constraint.dual_variables[0] for r in self.records]
        tags = {spec.family, *spec.objective}
        solvers = ["CLARABEL", "SCS"] + ([] if tags & ECOS_UNSUPPORTED else ["ECOS"])
        if spec.family in NATIVE_FAMILIES and "neg_log_det" not in spec.objective:
            solvers.append("NATIVE")
        return Drawn(spec, self.problem, self.parameters, outputs, vals, exp, gp=self.gp,
                     solvers=tuple(solvers))


def build(spec: Spec) -> Drawn:
    """The problem a spec describes, with planted values and outputs."""
    builder = Builder(spec)
    builder.assemble()
    return builder.draw()
