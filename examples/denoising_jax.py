"""Learning a denoiser's regularizer (JAX, ``jax.jit`` + ``jax.vmap``).

Noisy observations y = x_true + noise of piecewise-constant signals are denoised by

    x*(y; D) = argmin_x  ½‖x − y‖² + ‖D x‖₁,

where D is a convolution with a learned 3-tap kernel k: (D x)_i = k₀x_i + k₁x_{i+1} +
k₂x_{i+2}. The kernel starts at k = (0, 0.1, 0): D is a multiple of the identity, ‖D x‖₁
is plain ℓ1 shrinkage, a poor prior for these signals. Gradient descent on the mean
squared error ‖x*(y; D) − x_true‖² over a training set, through the layer batched with
``jax.vmap`` and compiled with ``jax.jit``, turns it into a difference operator
(k ≈ (−λ, λ, 0) up to a shift): total-variation denoising with a tuned weight λ.
"""

from __future__ import annotations

import pathlib

import cvxpy as cp
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from _common import cli, progress, report, save
from convexlayers.jax import CvxpyLayer

N = 48  # signal length
NOISE = 0.3


def denoiser(n: int) -> CvxpyLayer:
    x = cp.Variable(n)
    y = cp.Parameter(n)
    D = cp.Parameter((n - 2, n))
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x - y) + cp.norm1(D @ x)))
    return CvxpyLayer(problem, parameters=[D, y], variables=[x])


def operator(kernel: jax.Array, n: int) -> jax.Array:
    """The (n−2, n) convolution matrix of a 3-tap kernel."""
    shifts = jnp.stack([jnp.eye(n - 2, n, k=j) for j in range(3)])
    return jnp.tensordot(kernel, shifts, axes=1)


def signals(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Piecewise-constant signals with 2 to 4 jumps, and their noisy observations."""
    clean = np.zeros((count, N))
    for row in clean:
        jumps = np.sort(rng.choice(np.arange(4, N - 4), rng.integers(2, 5), replace=False))
        for start, stop in zip(np.r_[0, jumps], np.r_[jumps, N], strict=True):
            row[start:stop] = rng.uniform(-1.5, 1.5)
    return clean, clean + NOISE * rng.standard_normal(clean.shape)


def make_loss(layer: CvxpyLayer):
    batched = jax.vmap(layer, in_axes=(None, 0))  # D shared, one y per signal

    def loss(kernel, noisy, clean):
        (x,) = batched(operator(kernel, N), noisy)
        return jnp.mean(jnp.sum((x - clean) ** 2, axis=1))

    return loss


def adam(grad_fn, kernel, data, iters: int, lr: float):
    """A few lines of Adam (no optax needed)."""
    m = v = jnp.zeros_like(kernel)
    losses = []
    for t in progress(range(1, iters + 1), desc="learn kernel"):
        value, g = grad_fn(kernel, *data)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g**2
        kernel = kernel - lr * (m / (1 - 0.9**t)) / (jnp.sqrt(v / (1 - 0.999**t)) + 1e-8)
        losses.append(float(value))
    return kernel, losses


def plot(losses, kernels, test, denoised, out) -> pathlib.Path:
    clean, noisy = test
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].semilogy(losses)
    axes[0].set(xlabel="iteration", ylabel="mean squared error (train)",
                title="Training the regularizer")
    for name, k in kernels.items():
        axes[1].plot([0, 1, 2], np.asarray(k), "o-", label=f"{name}: {np.round(k, 2)}")
    axes[1].axhline(0, color="gray", lw=0.8)
    axes[1].set(xticks=[0, 1, 2], xlabel="tap", ylabel="weight", title="Kernel of D")
    axes[1].legend(fontsize=8)
    ax = axes[2]
    ax.plot(noisy, ".", color="gray", ms=4, label="noisy")
    ax.plot(clean, "k", lw=2, label="clean")
    for name, x in denoised.items():
        ax.plot(x, lw=1.5, label=f"denoised, {name} D")
    ax.set(xlabel="i", title="A held-out signal")
    ax.legend(fontsize=8)
    return save(fig, out, "denoising_jax")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    jax.config.update("jax_enable_x64", True)
    rng = np.random.default_rng(0)
    layer = denoiser(N)
    train = signals(8 if quick else 24, rng)
    test = signals(8 if quick else 64, rng)
    loss = make_loss(layer)
    grad_fn = jax.jit(jax.value_and_grad(loss))
    kernel0 = jnp.array([0.0, 0.1, 0.0])
    iters = 6 if quick else 45
    kernel, losses = adam(grad_fn, kernel0, (train[1], train[0]), iters, lr=0.05)
    test_loss = jax.jit(loss)
    before, after = float(test_loss(kernel0, test[1], test[0])), float(
        test_loss(kernel, test[1], test[0]))
    batched = jax.jit(jax.vmap(layer, in_axes=(None, 0)))
    denoised = {name: np.asarray(batched(operator(k, N), test[1][:1])[0][0])
                for name, k in [("initial", kernel0), ("learned", kernel)]}
    metrics = {
        "noise MSE (test)": float(np.mean(np.sum((test[1] - test[0]) ** 2, 1))),
        "initial MSE (test)": before,
        "learned MSE (test)": after,
        "reduction factor": before / after,
        "kernel": str(np.round(np.asarray(kernel), 3)),
    }
    path = plot(losses, {"initial": kernel0, "learned": kernel},
                (test[0][0], test[1][0]), denoised, out)
    report(f"Learned denoiser ({iters} iterations, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
