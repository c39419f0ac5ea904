"""The problem zoo: representative parametrized problems shared by every framework's tests.

Each case builds a fresh CVXPY problem, the layer's parameters and outputs, and
draws parameter values (unbatched) from a seeded generator. Values are chosen so
that the solution is unique and strictly complementary, where the derivative exists.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

# Accuracy of `problem.solve()` at Clarabel's default tolerance, the reference the
# layers' forward passes are compared with: x is accurate to ~1e-5 on the second-order,
# exponential and power cones (the layers polish their own solutions further).
REFERENCE_ATOL = 1e-4


@dataclass
class Case:
    """A problem with its layer arguments and a value generator."""

    name: str
    problem: cp.Problem
    parameters: list[cp.Parameter]
    variables: list[cp.Variable]
    draw: Callable[[np.random.Generator], list[np.ndarray]]
    gp: bool = False
    solvers: tuple[str, ...] = ("CLARABEL", "SCS", "ECOS")
    cones: frozenset[str] = field(default_factory=frozenset)

    def set_values(self, values: list[np.ndarray]) -> None:
        for p, v in zip(self.parameters, values, strict=True):
            p.value = v


def readme_problem():
    """The cvxpylayers README problem: (problem, A, b, x), the parameters named A and b."""
    n, m = 2, 3
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b")
    prob = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1)), [x >= 0])
    return prob, A, b, x


def readme() -> Case:
    """The cvxpylayers README example: an LP in disguise."""
    prob, A, b, x = readme_problem()
    return Case("readme", prob, [A, b], [x],
                lambda r: [r.standard_normal(A.shape), r.standard_normal(b.shape)])


def least_squares() -> Case:
    n, m = 3, 6
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + 0.1 * cp.sum_squares(x)))
    return Case("least_squares", prob, [A, b], [x],
                lambda r: [r.standard_normal((m, n)), r.standard_normal(m)])


def lp() -> Case:
    """min cᵀx s.t. Gx <= h, 0 <= x <= 1, with duals as outputs."""
    n, k = 4, 3
    x = cp.Variable(n)
    c, G, h = cp.Parameter(n), cp.Parameter((k, n)), cp.Parameter(k)
    cons = [G @ x <= h, x >= 0, x <= 1]
    prob = cp.Problem(cp.Minimize(c @ x), cons)
    return Case("lp", prob, [c, G, h], [x, cons[0].dual_variables[0]],
                lambda r: [r.standard_normal(n), r.standard_normal((k, n)),
                           r.uniform(0.5, 1.5, k)])


def qp_param_P() -> Case:
    """quad_form with a PSD parameter P, an equality and inequalities, duals too."""
    n = 3
    x = cp.Variable(n)
    P, q = cp.Parameter((n, n), PSD=True), cp.Parameter(n)
    cons = [cp.sum(x) == 1, x >= -0.2]
    prob = cp.Problem(cp.Minimize(0.5 * cp.quad_form(x, P) + q @ x), cons)

    def draw(r):
        F = r.standard_normal((n, n))
        return [F @ F.T + np.eye(n), r.standard_normal(n)]

    return Case("qp_param_P", prob, [P, q], [x, cons[0].dual_variables[0],
                                           cons[1].dual_variables[0]], draw,
                solvers=("CLARABEL", "SCS"))


def logistic() -> Case:
    """Regularized logistic regression: exponential cones.

    The labels are folded into the features (rows y_i a_iᵀ) to keep the problem DPP.
    """
    n, d = 8, 2
    w = cp.Variable(d)
    Z = cp.Parameter((n, d))
    lam = cp.Parameter(nonneg=True)
    prob = cp.Problem(cp.Minimize(cp.sum(cp.logistic(-Z @ w)) / n + lam * cp.sum_squares(w)))
    # ECOS stops at "close to optimal" on this problem: exp cones via ECOS are
    # covered by exp_cone and gp.
    return Case("logistic", prob, [Z, lam], [w],
                lambda r: [r.standard_normal((n, d)), np.array(0.1 + r.uniform())],
                solvers=("CLARABEL", "SCS"))


def socp() -> Case:
    n, m = 3, 4
    x = cp.Variable(n)
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    cons = [cp.norm(x) <= 1]
    prob = cp.Problem(cp.Minimize(cp.norm(A @ x - b) + c @ x), cons)
    return Case("socp", prob, [A, b, c], [x, cons[0].dual_variables[0]],
                lambda r: [r.standard_normal((m, n)), r.standard_normal(m),
                           r.standard_normal(n)])


def exp_cone() -> Case:
    """Entropy-regularized allocation: max entropy + aᵀx on the simplex."""
    n = 4
    x = cp.Variable(n)
    a = cp.Parameter(n)
    cons = [cp.sum(x) == 1]
    prob = cp.Problem(cp.Maximize(cp.sum(cp.entr(x)) + a @ x), cons)
    return Case("exp_cone", prob, [a], [x, cons[0].dual_variables[0]],
                lambda r: [r.standard_normal(n)])


def power_cone() -> Case:
    n = 3
    x = cp.Variable(n)
    a, b = cp.Parameter(n), cp.Parameter(pos=True)
    obj = cp.sum(cp.power(x, 1.5, approx=False)) - a @ x
    prob = cp.Problem(cp.Minimize(obj), [x >= 0, cp.sum(x) <= b])
    return Case("power_cone", prob, [a, b], [x],
                lambda r: [r.uniform(0.5, 1.5, n), np.array(r.uniform(1.0, 2.0))],
                solvers=("CLARABEL", "SCS"))


def sdp() -> Case:
    """Regularized SDP: min ⟨C, X⟩ + ||X||_F² s.t. X ⪰ 0, tr X = 1; the PSD dual too."""
    k = 3
    X = cp.Variable((k, k), symmetric=True)
    C = cp.Parameter((k, k), symmetric=True)
    cons = [X >> 0, cp.trace(X) == 1]
    prob = cp.Problem(cp.Minimize(cp.trace(C @ X) + cp.sum_squares(X)), cons)

    def draw(r):
        G = r.standard_normal((k, k))
        return [G + G.T]

    return Case("sdp", prob, [C], [X, cons[0].dual_variables[0]], draw,
                solvers=("CLARABEL", "SCS"))


def gp() -> Case:
    """The cvxpylayers README's log-log convex program."""
    x, y, z = (cp.Variable(pos=True) for _ in range(3))
    a, b = cp.Parameter(pos=True), cp.Parameter(pos=True)
    c = cp.Parameter()
    cons = [a * (x * y + x * z + y * z) <= b, x >= y**c]
    prob = cp.Problem(cp.Minimize(1 / (x * y * z)), cons)
    return Case("gp", prob, [a, b, c], [x, y, z],
                lambda r: [np.array(r.uniform(1.5, 2.5)), np.array(r.uniform(0.8, 1.2)),
                           np.array(r.uniform(0.3, 0.7))], gp=True)


CASES: dict[str, Callable[[], Case]] = {
    f.__name__: f
    for f in (readme, least_squares, lp, qp_param_P, logistic, socp, exp_cone, power_cone,
              sdp, gp)
}


# -- small problems for the error tests of every layer: (problem, parameters, variables) ---
def signed_parameters():
    """lam declared nonneg, c declared pos."""
    x = cp.Variable(2)
    lam = cp.Parameter(nonneg=True, name="lam")
    c = cp.Parameter(2, pos=True, name="c")
    prob = cp.Problem(cp.Minimize(lam * cp.sum_squares(x) + c @ x), [x >= -1])
    return prob, [lam, c], [x]


def matrix_parameters():
    """P declared PSD (in quad_form), S declared symmetric."""
    x = cp.Variable(2)
    P = cp.Parameter((2, 2), PSD=True, name="P")
    S = cp.Parameter((2, 2), symmetric=True, name="S")
    X = cp.Variable((2, 2), symmetric=True)
    prob = cp.Problem(cp.Minimize(cp.quad_form(x, P) + cp.trace(S @ X)),
                      [cp.sum(x) == 1, X >> 0, cp.trace(X) == 1])
    return prob, [P, S], [x]


def interval():
    """min x s.t. lo <= x <= hi: infeasible when lo > hi."""
    x = cp.Variable()
    lo, hi = cp.Parameter(name="lo"), cp.Parameter(name="hi")
    return cp.Problem(cp.Minimize(x), [x >= lo, x <= hi]), [lo, hi], [x]


def unbounded():
    """min c x s.t. x >= 0: unbounded when c < 0."""
    x = cp.Variable()
    c = cp.Parameter(name="c")
    return cp.Problem(cp.Minimize(c * x), [x >= 0]), [c], [x]


def box_qp():
    """min ½‖x − c‖² s.t. x ≥ lo, 1ᵀx ≤ h: infeasible when 1ᵀlo > h."""
    x = cp.Variable(3)
    c, lo, h = cp.Parameter(3, name="c"), cp.Parameter(3, name="lo"), cp.Parameter(name="h")
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - c)), [x >= lo, cp.sum(x) <= h])
    return prob, [c, lo, h], [x]


def box_qp_values(batch: int, rng: np.random.Generator, infeasible=()) -> list[np.ndarray]:
    """Values for :func:`box_qp`; the elements listed in ``infeasible`` have no solution."""
    h = np.ones(batch)
    h[list(infeasible)] = -10.0
    return [rng.standard_normal((batch, 3)), rng.uniform(-2, -1, (batch, 3)), h]
