"""Data poisoning of logistic regression as a bilevel problem (TensorFlow).

A logistic regression is trained on points (xᵢ, yᵢ), as a convex program inside a layer:

    θ*(X) = argmin_θ,b  (1/n) Σᵢ log(1 + exp(−yᵢ(xᵢᵀθ + b))) + (λ/2)‖θ‖².

An attacker may move every training point by at most ε in each coordinate,
X → X + δ with ‖δ‖∞ ≤ ε, and wants to maximize the loss of the trained model on
clean test data. The attack is projected gradient ascent on δ
(Mei & Zhu, "Using machine teaching to identify optimal training-set attacks"), with
the gradient of the test loss with respect to δ taken through the training problem by
``tf.GradientTape``. The test loss rises and the decision boundary turns.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib

import cvxpy as cp
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from _common import cli, progress, report, save
from convexlayers.tensorflow import CvxpyLayer

LAMBDA, EPSILON = 0.05, 0.5


def trainer(y: np.ndarray) -> CvxpyLayer:
    """The training problem: parameter X (the training points), outputs θ and b."""
    n, d = len(y), 2
    X = cp.Parameter((n, d))
    theta, b = cp.Variable(d), cp.Variable()
    loss = cp.sum(cp.logistic(-cp.multiply(y, X @ theta + b))) / n
    problem = cp.Problem(cp.Minimize(loss + LAMBDA / 2 * cp.sum_squares(theta)))
    return CvxpyLayer(problem, parameters=[X], variables=[theta, b])


def blobs(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian classes, labels ±1."""
    y = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    X = rng.standard_normal((n, 2)) * 0.8 + y[:, None] * np.array([1.0, 0.6])
    return X, y


def test_loss(theta, b, X, y):
    margins = y * (tf.linalg.matvec(X, theta) + b)
    return tf.reduce_mean(tf.math.softplus(-margins)), tf.reduce_mean(
        tf.cast(margins > 0, tf.float64))


def attack(layer, X_train, test, iters: int, step: float):
    """Projected (signed) gradient ascent on the test loss over ‖δ‖∞ ≤ ε."""
    X_train = tf.constant(X_train)
    delta = tf.Variable(tf.zeros_like(X_train))
    history = []
    for _ in progress(range(iters), desc="poison"):
        with tf.GradientTape() as tape:
            theta, b = layer(X_train + delta)
            loss, accuracy = test_loss(theta, b, *test)
        grad = tape.gradient(loss, delta)
        delta.assign(tf.clip_by_value(delta + step * tf.sign(grad), -EPSILON, EPSILON))
        history.append((float(loss), float(accuracy)))
    theta, b = layer(X_train + delta)
    history.append(tuple(float(v) for v in test_loss(theta, b, *test)))
    return delta.numpy(), history


def plot(X, y, delta, models, history, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ax = axes[0]
    for label, marker in [(1, "o"), (-1, "s")]:
        keep = y == label
        ax.scatter(*X[keep].T, marker=marker, facecolors="none", edgecolors="gray", s=25)
        ax.scatter(*(X + delta)[keep].T, marker=marker, s=20,
                   color="tab:blue" if label == 1 else "tab:orange")
    ax.quiver(*X.T, *delta.T, angles="xy", scale_units="xy", scale=1, width=0.003, alpha=0.5)
    xs = np.linspace(X[:, 0].min() - 1, X[:, 0].max() + 1, 2)
    for (theta, b), color, name in zip(models, ["k", "tab:red"], ["clean", "poisoned"],
                                        strict=True):
        ax.plot(xs, -(theta[0] * xs + b) / theta[1], color=color, label=f"{name} boundary")
    ax.set(xlim=(xs[0], xs[1]), ylim=(X[:, 1].min() - 1, X[:, 1].max() + 1), aspect="equal",
           title=f"Training points moved by ‖δ‖∞ ≤ {EPSILON}")
    ax.legend(fontsize=8)
    losses, accuracies = np.array(history).T
    ax = axes[1]
    ax.plot(losses, color="tab:red", label="test loss")
    ax.set(xlabel="attack iteration", ylabel="logistic loss on clean test data",
           title="The attack raises the test loss")
    ax2 = ax.twinx()
    ax2.plot(accuracies, color="tab:blue", ls="--", label="test accuracy")
    ax2.set(ylabel="test accuracy")
    ax.legend(loc="center left", fontsize=8)
    ax2.legend(loc="center right", fontsize=8)
    return save(fig, out, "poisoning_tf")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    rng = np.random.default_rng(0)
    X_train, y_train = blobs(20 if quick else 60, rng)
    X_test, y_test = blobs(1000, rng)
    layer = trainer(y_train)
    iters = 4 if quick else 25
    delta, history = attack(layer, X_train, (tf.constant(X_test), tf.constant(y_test)),
                            iters, step=EPSILON / 10)
    clean = [t.numpy() for t in layer(tf.constant(X_train))]
    poisoned = [t.numpy() for t in layer(tf.constant(X_train + delta))]
    metrics = {
        "clean test loss": history[0][0],
        "poisoned test loss": history[-1][0],
        "clean test accuracy": history[0][1],
        "poisoned test accuracy": history[-1][1],
        "max |δ|": float(np.abs(delta).max()),
    }
    path = plot(X_train, y_train, delta, [clean, poisoned], history, out)
    report(f"Poisoning logistic regression ({iters} iterations, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
