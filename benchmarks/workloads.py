"""Benchmark problems, built identically for every library.

Each :class:`Workload` builds a *fresh* CVXPY problem per call of ``build`` (CVXPY
caches canonicalizations on the problem object, so sharing one would hand later
libraries a free construction), and draws its batched parameter values from a
seeded generator. Problems whose data is a QP in OptNet's form also say how to
write that QP for qpth, as torch expressions of the same parameter tensors so
that gradients flow back to the same leaves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np
import torch

Built = tuple[cp.Problem, list[cp.Parameter], list[cp.Variable]]


@dataclass(frozen=True)
class Workload:
    """One problem at one size and batch.

    Attributes:
        family: problem kind, e.g. "qp_dense".
        label: size and batch, e.g. "n=50 B=32".
        batch: the leading batch dimension of every parameter value.
        build: returns a new (problem, parameters, variables).
        values: seed -> one (batch, *shape) array per parameter.
        qpth: parameter tensors -> (Q, p, G, h, A, b) for qpth, or None.
        qpth_skip: why qpth does not run this workload (when ``qpth`` is None).
        cones: the cones the problem needs (for the report).
    """

    family: str
    label: str
    batch: int
    build: Callable[[], Built]
    values: Callable[[int], list[np.ndarray]]
    qpth: Callable[[list[torch.Tensor]], tuple] | None = None
    qpth_skip: str = "not a QP"
    cones: str = ""
    sizes: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.family} {self.label}"


def _rng(seed: int, tag: str) -> np.random.Generator:
    return np.random.default_rng([seed, *tag.encode()])


# -- (a) dense QP, OptNet style: min ½xᵀ(LᵀL + εI)x + qᵀx  s.t.  Gx ≤ h, Ax = b ------------
_EPS_Q = 0.1


def dense_qp(n: int, batch: int) -> Workload:
    m, p = n, max(1, n // 4)

    def build() -> Built:
        x = cp.Variable(n, name="x")
        L, q = cp.Parameter((n, n), name="L"), cp.Parameter(n, name="q")
        G, h = cp.Parameter((m, n), name="G"), cp.Parameter(m, name="h")
        A, b = cp.Parameter((p, n), name="A"), cp.Parameter(p, name="b")
        obj = 0.5 * cp.sum_squares(L @ x) + 0.5 * _EPS_Q * cp.sum_squares(x) + q @ x
        prob = cp.Problem(cp.Minimize(obj), [G @ x <= h, A @ x == b])
        return prob, [L, q, G, h, A, b], [x]

    def values(seed: int) -> list[np.ndarray]:
        r = _rng(seed, f"qp{n}")
        x0 = r.standard_normal((batch, n))
        L = r.standard_normal((batch, n, n)) / np.sqrt(n)
        G = r.standard_normal((batch, m, n))
        A = r.standard_normal((batch, p, n))
        h = np.einsum("bij,bj->bi", G, x0) + r.uniform(0.0, 1.0, (batch, m))
        b = np.einsum("bij,bj->bi", A, x0)
        q = 3.0 * r.standard_normal((batch, n))
        return [L, q, G, h, A, b]

    def qpth(t: list[torch.Tensor]) -> tuple:
        L, q, G, h, A, b = t
        eye = torch.eye(n, dtype=L.dtype)
        return L.transpose(-1, -2) @ L + _EPS_Q * eye, q, G, h, A, b

    return Workload("qp_dense", f"n={n} B={batch}", batch, build, values, qpth,
                    cones="zero, nonneg (+ P)", sizes={"n": n, "m_ineq": m, "m_eq": p})


# -- (b) the cvxpylayers README LP: min ½‖Ax − b‖₁ s.t. x ≥ 0 -----------------------------
def readme_lp(m: int, n: int, batch: int) -> Workload:
    def build() -> Built:
        x = cp.Variable(n, name="x")
        A, b = cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b")
        prob = cp.Problem(cp.Minimize(0.5 * cp.pnorm(A @ x - b, p=1)), [x >= 0])
        return prob, [A, b], [x]

    def values(seed: int) -> list[np.ndarray]:
        r = _rng(seed, f"lp{m}x{n}")
        return [r.standard_normal((batch, m, n)), r.standard_normal((batch, m))]

    return Workload("lp_readme", f"m={m} n={n} B={batch}", batch, build, values,
                    qpth_skip="an LP (qpth needs a positive definite Q)", cones="nonneg",
                    sizes={"m": m, "n": n})


# -- (c) ridge regression: min ‖Ax − b‖² + λ‖x‖² ------------------------------------------
def ridge(m: int, n: int, batch: int) -> Workload:
    def build() -> Built:
        x = cp.Variable(n, name="x")
        A, b = cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b")
        lam = cp.Parameter(nonneg=True, name="lam")
        prob = cp.Problem(cp.Minimize(cp.sum_squares(A @ x - b) + lam * cp.sum_squares(x)))
        return prob, [A, b, lam], [x]

    def values(seed: int) -> list[np.ndarray]:
        r = _rng(seed, f"ridge{m}x{n}")
        A = r.standard_normal((batch, m, n)) / np.sqrt(m)
        return [A, r.standard_normal((batch, m)), r.uniform(0.1, 1.0, batch)]

    return Workload("ridge", f"m={m} n={n} B={batch}", batch, build, values,
                    qpth_skip="unconstrained (qpth asserts at least one constraint)",
                    cones="none (+ P)", sizes={"m": m, "n": n})


# -- (d) SOCP: mean-risk portfolio, min −μᵀx + γ‖Fx‖₂ s.t. 1ᵀx = 1, x ≥ 0 ---------------
def portfolio_socp(n: int, batch: int) -> Workload:
    k = max(2, n // 2)

    def build() -> Built:
        x = cp.Variable(n, name="x")
        mu, F = cp.Parameter(n, name="mu"), cp.Parameter((k, n), name="F")
        obj = -mu @ x + 2.0 * cp.norm(F @ x, 2)
        prob = cp.Problem(cp.Minimize(obj), [cp.sum(x) == 1, x >= 0])
        return prob, [mu, F], [x]

    def values(seed: int) -> list[np.ndarray]:
        r = _rng(seed, f"socp{n}")
        return [r.uniform(0.0, 1.0, (batch, n)), r.standard_normal((batch, k, n)) / np.sqrt(k)]

    return Workload("socp_portfolio", f"n={n} B={batch}", batch, build, values,
                    qpth_skip="has a second-order cone", cones="zero, nonneg, soc",
                    sizes={"n": n, "k": k})


# -- (e) exponential cone: ℓ2-regularized logistic regression ------------------------------
def logistic(N: int, d: int, batch: int) -> Workload:
    labels = np.where(_rng(0, f"labels{N}").uniform(size=N) < 0.5, -1.0, 1.0)

    def build() -> Built:
        w = cp.Variable(d, name="w")
        X = cp.Parameter((N, d), name="X")
        loss = cp.sum(cp.logistic(cp.multiply(-labels, X @ w))) / N
        prob = cp.Problem(cp.Minimize(loss + 0.1 * cp.sum_squares(w)))
        return prob, [X], [w]

    def values(seed: int) -> list[np.ndarray]:
        r = _rng(seed, f"logreg{N}x{d}")
        return [r.standard_normal((batch, N, d)) + 0.5 * labels[None, :, None]]

    return Workload("exp_logistic", f"N={N} d={d} B={batch}", batch, build, values,
                    qpth_skip="has exponential cones", cones="nonneg, exp (+ P)",
                    sizes={"N": N, "d": d})


# -- (f) sparse QP: box-constrained smoothing, min ½‖x − y‖² + ½λ‖Dx‖² s.t. 0 ≤ x ≤ 1 ---------
def sparse_qp(n: int, batch: int) -> Workload:
    def build() -> Built:
        x = cp.Variable(n, name="x")
        y = cp.Parameter(n, name="y")
        obj = 0.5 * cp.sum_squares(x - y) + 5.0 * cp.sum_squares(cp.diff(x))
        prob = cp.Problem(cp.Minimize(obj), [x >= 0, x <= 1])
        return prob, [y], [x]

    def values(seed: int) -> list[np.ndarray]:
        r = _rng(seed, f"sparse{n}")
        t = np.linspace(0, 4 * np.pi, n)
        return [0.5 + 0.8 * np.sin(t)[None] + 0.3 * r.standard_normal((batch, n))]

    return Workload("qp_sparse", f"n={n} B={batch}", batch, build, values,
                    qpth_skip=f"dense solver: would factor {2 * n}x{2 * n} dense systems",
                    cones="zero, nonneg (+ P)", sizes={"n": n})


# -- (g) degenerate: CVXPY's auxiliary variables leave the KKT Jacobian singular ----------
def mpc(T: int, batch: int) -> Workload:
    """Box-constrained MPC of a double integrator: `abs(u) <= 1` and an `abs` epigraph."""
    nx, nu = 4, 2

    def build() -> Built:
        x, u = cp.Variable((nx, T + 1), name="x"), cp.Variable((nu, T), name="u")
        x0 = cp.Parameter(nx, name="x0")
        A, B = cp.Parameter((nx, nx), name="A"), cp.Parameter((nx, nu), name="B")
        cons = [x[:, 0] == x0, cp.abs(u) <= 1]
        cons += [x[:, t + 1] == A @ x[:, t] + B @ u[:, t] for t in range(T)]
        obj = cp.sum_squares(x) + 0.1 * cp.sum_squares(u) + 0.1 * cp.sum(cp.abs(u))
        return cp.Problem(cp.Minimize(obj), cons), [x0, A, B], [u]

    def values(seed: int) -> list[np.ndarray]:
        r = _rng(seed, f"mpc{T}")
        A = np.eye(nx) + 0.1 * np.diag(np.ones(nx - 1), 1)
        B = np.vstack([np.zeros((nx - nu, nu)), 0.1 * np.eye(nu)])
        return [3.0 * r.standard_normal((batch, nx)),
                np.broadcast_to(A, (batch, nx, nx)) + 0.01 * r.standard_normal((batch, nx, nx)),
                np.broadcast_to(B, (batch, nx, nu)).copy()]

    return Workload("mpc_degenerate", f"T={T} B={batch}", batch, build, values,
                    qpth_skip="CVXPY's abs epigraph (not in OptNet form)",
                    cones="zero, nonneg (+ P)", sizes={"T": T})


def robust_regression(m: int, n: int, batch: int) -> Workload:
    """min ‖Ax − b‖₂ + λ‖x‖₁ s.t. ‖x‖₂ ≤ 10: the norm bound is inactive (J singular)."""

    def build() -> Built:
        x = cp.Variable(n, name="x")
        A, b = cp.Parameter((m, n), name="A"), cp.Parameter(m, name="b")
        obj = cp.norm(A @ x - b, 2) + 0.1 * cp.norm1(x)
        return cp.Problem(cp.Minimize(obj), [cp.norm(x, 2) <= 10]), [A, b], [x]

    def values(seed: int) -> list[np.ndarray]:
        r = _rng(seed, f"robust{m}x{n}")
        return [r.standard_normal((batch, m, n)), r.standard_normal((batch, m))]

    return Workload("robust_regression", f"m={m} n={n} B={batch}", batch, build, values,
                    qpth_skip="has second-order cones", cones="nonneg, soc",
                    sizes={"m": m, "n": n})


def sparsemax(n: int, batch: int) -> Workload:
    """Projection onto the simplex: most of x ≥ 0 active, many inactive constraints."""

    def build() -> Built:
        x = cp.Variable(n, name="x")
        z = cp.Parameter(n, name="z")
        prob = cp.Problem(cp.Minimize(cp.sum_squares(x - z)), [cp.sum(x) == 1, x >= 0])
        return prob, [z], [x]

    def values(seed: int) -> list[np.ndarray]:
        return [_rng(seed, f"sparsemax{n}").standard_normal((batch, n))]

    def qpth(t: list[torch.Tensor]) -> tuple:
        (z,) = t
        eye = torch.eye(n, dtype=z.dtype)
        return (2 * eye.expand(batch, n, n), -2 * z, -eye.expand(batch, n, n),
                torch.zeros(batch, n, dtype=z.dtype), torch.ones(batch, 1, n, dtype=z.dtype),
                torch.ones(batch, 1, dtype=z.dtype))

    return Workload("sparsemax", f"n={n} B={batch}", batch, build, values, qpth=qpth,
                    cones="zero, nonneg (+ P)", sizes={"n": n})


# -- (j) SDP: projection onto the spectraplex, min ‖X − C‖_F² s.t. X ⪰ 0, tr X = 1 -----------
def sdp(k: int, batch: int) -> Workload:
    def build() -> Built:
        X = cp.Variable((k, k), symmetric=True, name="X")
        C = cp.Parameter((k, k), symmetric=True, name="C")
        cons = [X >> 0, cp.trace(X) == 1]
        prob = cp.Problem(cp.Minimize(cp.sum_squares(X - C)), cons)
        return prob, [C], [X, cons[0].dual_variables[0]]

    def values(seed: int) -> list[np.ndarray]:
        G = _rng(seed, f"sdp{k}").standard_normal((batch, k, k))
        return [0.5 * (G + np.swapaxes(G, 1, 2))]

    return Workload("sdp_spectraplex", f"k={k} B={batch}", batch, build, values,
                    qpth_skip="has a PSD cone", cones="zero, psd (+ P)", sizes={"k": k})


# -- (k) a large second-order cone: projection onto {‖x‖ ≤ 1, x ≥ −0.2} ------------------
def soc_ball(n: int, batch: int) -> Workload:
    def build() -> Built:
        x, p = cp.Variable(n, name="x"), cp.Parameter(n, name="p")
        cons = [cp.norm(x) <= 1, x >= -0.2]
        return cp.Problem(cp.Minimize(cp.sum_squares(x - p)), cons), [p], [x]

    def values(seed: int) -> list[np.ndarray]:
        # ‖p‖ about 1.5 (the ball active) in half the batch, 0.5 (inactive) in the rest.
        r = _rng(seed, f"ball{n}")
        scale = np.where(np.arange(batch) % 2 == 0, 1.5, 0.5)[:, None] / np.sqrt(n)
        return [scale * r.standard_normal((batch, n))]

    return Workload("soc_ball", f"n={n} B={batch}", batch, build, values,
                    qpth_skip="has a second-order cone", cones="nonneg, soc (+ P)",
                    sizes={"n": n})


def suite(quick: bool) -> list[Workload]:
    """The workloads of a quick or a full run."""
    if quick:
        return [
            dense_qp(10, 1), dense_qp(10, 32), dense_qp(50, 8),
            readme_lp(20, 10, 8), ridge(30, 10, 8), portfolio_socp(20, 8),
            logistic(30, 5, 4), sparse_qp(300, 2),
            mpc(10, 16), robust_regression(20, 10, 16), sparsemax(30, 32), sdp(4, 16),
            soc_ball(100, 4),
        ]
    return [
        *(dense_qp(n, b) for n in (10, 50, 100) for b in (1, 32, 128)),
        readme_lp(40, 20, 32), readme_lp(200, 100, 32),
        ridge(50, 20, 32), ridge(200, 100, 32),
        portfolio_socp(20, 32), portfolio_socp(100, 32),
        logistic(50, 5, 16), logistic(200, 20, 16),
        sparse_qp(2000, 1), sparse_qp(2000, 4),
        mpc(10, 64), robust_regression(30, 15, 64), sparsemax(100, 256),
        sdp(6, 64), sdp(20, 16), soc_ball(1000, 8),
    ]
