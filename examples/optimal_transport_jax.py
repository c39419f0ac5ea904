"""Entropic optimal transport as a layer: learning a ground metric (JAX).

The entropy-regularized transport plan between point clouds x₁..xₙ and y₁..yₙ with
uniform marginals a = b = 1/n is the solution of a convex program (Cuturi, 2013):

    P*(C) = argmin_P  ⟨C, P⟩ − ε H(P)   s.t.  P1 = a,  Pᵀ1 = b,

with H(P) = −Σ Pᵢⱼ log Pᵢⱼ. The costs are a learned Mahalanobis metric,
Cᵢⱼ = ‖L(xᵢ − yⱼ)‖². Observed plans were produced by a hidden anisotropic metric; the
layer, batched over several pairs of clouds and differentiated with ``jax.grad`` under
``jax.jit``, learns M = LᵀL from the plans alone. The layer's plans are also checked
against Sinkhorn's algorithm, which computes the same P* by matrix scaling.
"""

from __future__ import annotations

import pathlib

import cvxpy as cp
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from scipy.special import logsumexp

from _common import cli, progress, report, save
from convexlayers.jax import CvxpyLayer

N, EPS = 7, 0.2
L_TRUE = np.array([[1.6, 0.0], [0.9, 0.5]])


def transport_layer(n: int) -> CvxpyLayer:
    P = cp.Variable((n, n))
    C = cp.Parameter((n, n))
    a = np.full(n, 1 / n)
    objective = cp.Minimize(cp.sum(cp.multiply(C, P)) - EPS * cp.sum(cp.entr(P)))
    problem = cp.Problem(objective, [cp.sum(P, axis=1) == a, cp.sum(P, axis=0) == a])
    return CvxpyLayer(problem, parameters=[C], variables=[P])


def costs(L, x, y):
    """Cᵢⱼ = ‖L(xᵢ − yⱼ)‖² for a batch of clouds x, y of shape (B, n, 2)."""
    diff = x[:, :, None, :] - y[:, None, :, :]
    return jnp.sum((diff @ L.T) ** 2, axis=-1)


def sinkhorn(C: np.ndarray, tol: float = 1e-13, max_iters: int = 200_000) -> np.ndarray:
    """Log-domain Sinkhorn for uniform marginals, run until the marginals match to ``tol``."""
    n = C.shape[-1]
    log_a = np.full(n, -np.log(n))
    f, g = np.zeros(C.shape[:-1]), np.zeros(C.shape[:-1])
    for _ in range(max_iters):
        f = EPS * (log_a - logsumexp((g[..., None, :] - C) / EPS, axis=-1))
        g = EPS * (log_a - logsumexp((f[..., :, None] - C) / EPS, axis=-2))
        P = np.exp((f[..., :, None] + g[..., None, :] - C) / EPS)
        if np.abs(P.sum(-1) - 1 / n).max() < tol:
            break
    return P


def adam(grad_fn, L, iters: int, lr: float):
    m = v = jnp.zeros_like(L)
    losses, metrics = [], []
    for t in progress(range(1, iters + 1), desc="learn metric"):
        value, g = grad_fn(L)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        L = L - lr * (m / (1 - 0.9**t)) / (jnp.sqrt(v / (1 - 0.999**t)) + 1e-8)
        losses.append(float(value))
        metrics.append(np.asarray(L.T @ L))
    return L, losses, metrics


def ellipse(M: np.ndarray) -> np.ndarray:
    """Points of the unit ball {v : vᵀMv = 1}."""
    t = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([np.cos(t), np.sin(t)])
    vals, vecs = np.linalg.eigh(M)
    return vecs @ (circle / np.sqrt(vals)[:, None])


def draw_plan(ax, x, y, P, color, title):
    ax.scatter(*x.T, color="tab:blue", zorder=3, label="x")
    ax.scatter(*y.T, color="tab:orange", zorder=3, label="y")
    for i in range(len(x)):
        for j in range(len(y)):
            ax.plot([x[i, 0], y[j, 0]], [x[i, 1], y[j, 1]], color=color,
                    alpha=float(np.clip(P[i, j] * len(x), 0, 1)), lw=2)
    ax.set(aspect="equal", title=title)


def plot(losses, metrics, clouds, plans, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2))
    axes[0].semilogy(losses)
    axes[0].set(xlabel="iteration", ylabel="Σ ‖P*(C_L) − P_observed‖²", title="Training")
    for M, color, label in [(metrics[0], "tab:gray", "initial"), (metrics[-1], "tab:green",
                            "learned"), (L_TRUE.T @ L_TRUE, "k", "hidden")]:
        pts = ellipse(M)
        axes[1].plot(*pts, color=color, ls="--" if label == "hidden" else "-", label=label)
    axes[1].set(aspect="equal", title="Unit ball of the metric vᵀMv = 1")
    axes[1].legend(fontsize=8)
    x, y = clouds
    draw_plan(axes[2], x, y, plans["initial"], "tab:gray", "Plan with the initial metric")
    draw_plan(axes[3], x, y, plans["learned"], "tab:green",
              "Plan with the learned metric (= observed)")
    return save(fig, out, "optimal_transport_jax")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    layer = transport_layer(N)
    batch = 3 if quick else 8
    x, y = (rng.uniform(-1, 1, (batch, N, 2)) for _ in range(2))
    observed = sinkhorn(np.asarray(costs(jnp.asarray(L_TRUE), x, y)))

    (P_true,) = layer(costs(jnp.asarray(L_TRUE), x, y))
    sinkhorn_error = float(np.abs(np.asarray(P_true) - observed).max())

    def loss(L):
        (P,) = layer(costs(L, x, y))
        return jnp.sum((P - observed) ** 2)

    L0 = jnp.eye(2)
    L, losses, metrics = adam(jax.jit(jax.value_and_grad(loss)), L0, 15 if quick else 120, 0.05)
    M_true = L_TRUE.T @ L_TRUE
    plans = {name: np.asarray(layer(costs(m, x[:1], y[:1]))[0][0])
             for name, m in [("initial", L0), ("learned", L)]}
    metrics_out = {
        "layer vs Sinkhorn, max |ΔP|": sinkhorn_error,
        "first loss": losses[0],
        "final loss": losses[-1],
        "reduction factor": losses[0] / losses[-1],
        "relative metric error, initial": float(np.linalg.norm(np.eye(2)
                                                               - M_true) / np.linalg.norm(M_true)),
        "relative metric error, learned": float(np.linalg.norm(metrics[-1] - M_true)
                                                / np.linalg.norm(M_true)),
    }
    path = plot(losses, [np.eye(2), *metrics], (x[0], y[0]), plans, out)
    report(f"Entropic OT, learned metric ({len(losses)} iterations, figure {path})", metrics_out)
    return metrics_out


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
