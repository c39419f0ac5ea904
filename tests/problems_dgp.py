"""Random log-log convex (``gp=True``) problems with a planted solution.

The same planting as :mod:`problems_random`, in log space y = log x, where the
problem is convex:

    minimize    P₀(x) · Πᵢ xᵢ^qᵢ                  P₀ = Σᵢ (cᵢ xᵢ + c'ᵢ / xᵢ) + monomials
    subject to  posynomial or monomial ≤ h,   monomial = h

log P₀(eʸ) is a log-sum-exp of affine functions of y whose exponent rows include ±eᵢ,
so it is strictly convex and the planted solution is unique. The exponents q enter
linearly in log space (CVXPY's DGP-DPP allows parameters as exponents), which is
what makes planting possible: q = -(∇ log P₀ + Σ λⱼ ∇ log gⱼ + ν ∇ log m). Positive
coefficients c enter through their logarithm (parameters with ``pos=True``).
"""

from __future__ import annotations

import functools
import operator

import cvxpy as cp
import numpy as np

from problems_random import Builder, Eq, Ineq, Spec


class DgpBuilder(Builder):
    """Builder for ``gp=True`` problems: variables positive, planted in log space."""

    gp = True

    def __init__(self, spec: Spec) -> None:
        super().__init__(spec)
        self.x = cp.Variable(spec.n, pos=True, name="x")

    def monomial(self, exponents=(-1.0, -0.5, 0.5, 1.0)) -> cp.Expression:
        """d · Πᵢ xᵢ^aᵢ with d a positive parameter and aᵢ drawn from ``exponents``."""
        n = self.spec.n
        d = self.structural((), lambda r: np.array(r.uniform(0.5, 2.0)), pos=True)
        a = self.rng.choice(exponents, n)
        return d * functools.reduce(operator.mul, [self.x[i] ** float(a[i]) for i in range(n)])

    def assemble(self) -> None:
        spec, x, n = self.spec, self.x, self.spec.n
        c = self.structural(2 * n, lambda r: r.uniform(0.5, 2.0, 2 * n), pos=True)
        P0 = functools.reduce(operator.add, [c[2 * i] * x[i] + c[2 * i + 1] / x[i]
                                             for i in range(n)])
        for atom in spec.objective:
            P0 = P0 + self.monomial((-0.5, 0.5) if atom == "sqrt_monomial" else (-1.0, 1.0, 2.0))
        self.q = [self.planted(()) for _ in range(n)]
        cost = P0 * functools.reduce(operator.mul, [x[i] ** self.q[i] for i in range(n)])
        for atom in spec.constraints:
            g = self.monomial() if atom == "monomial" else self.monomial() + self.monomial()
            h = self.planted((), pos=True)
            self.records.append(Ineq(g, h, 1, g <= h))
        if spec.equality:
            m, h = self.monomial(), self.planted((), pos=True)
            self.records.append(Eq(m, h, m == h))
        self.f = P0
        self.problem = cp.Problem(cp.Minimize(cost), [r.constraint for r in self.records])
        assert self.problem.is_dgp(dpp=True)

    def _values_of(self, expr):
        def fun(y):
            self.x.value = np.exp(y)
            return np.log(np.asarray(expr.value, dtype=float))

        return fun

    def _point(self, rng) -> np.ndarray:
        return rng.uniform(-0.5, 0.5, self.spec.n)

    def _rhs(self, h):
        return np.exp(h)

    def _set_cost(self, q) -> None:
        for qi, v in zip(self.q, q, strict=True):
            qi.value = v

    def _primal(self, point):
        return np.exp(point)


def build_dgp(spec: Spec):
    """The ``gp=True`` problem a spec (family "dgp") describes, values and outputs planted."""
    builder = DgpBuilder(spec)
    builder.assemble()
    return builder.draw()
