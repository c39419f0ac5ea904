"""Decision-focused learning with Keras ``model.fit`` (TensorFlow).

Each day, features z predict the values c of 10 items; we then pick a fractional
knapsack with a quadratic regularizer,

    x*(c) = argmax_x  cᵀx − (γ/2)‖x‖²   s.t.  0 ≤ x ≤ 1,  wᵀx ≤ W.

The values depend on the features through a degree-4 polynomial (Elmachtoub & Grigas,
"Smart predict, then optimize"), so a linear model cannot fit them. Two linear models
are trained with ``model.fit``:

* two-stage: predict ĉ by least squares (MSE), then decide x*(ĉ);
* decision-focused: the knapsack is a layer after the linear model, and the loss is
  the value given up, −cᵀx*(ĉ), differentiated through the layer.

Both are scored by their regret on held-out days, cᵀx*(c) − cᵀx*(ĉ): the
decision-focused model decides better, although its predicted values are further from
the truth.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pathlib

import cvxpy as cp
import keras
import matplotlib.pyplot as plt
import numpy as np
import tensorflow as tf

from _common import cli, progress, report, save
from convexlayers.tensorflow import CvxpyLayer

N_ITEMS, N_FEATURES, GAMMA = 10, 5, 0.2


class Knapsack(keras.layers.Layer):
    """x*(c) for a batch of value vectors c: the regularized fractional knapsack."""

    def __init__(self, weights, capacity: float, gamma: float = GAMMA, **kwargs):
        super().__init__(**kwargs)
        self.weights_, self.capacity, self.gamma = list(weights), capacity, gamma
        x, c = cp.Variable(len(weights)), cp.Parameter(len(weights))
        objective = cp.Maximize(c @ x - gamma / 2 * cp.sum_squares(x))
        constraints = [x >= 0, x <= 1, np.asarray(weights) @ x <= capacity]
        self.solve = CvxpyLayer(cp.Problem(objective, constraints), parameters=[c], variables=[x])

    def call(self, c):
        return self.solve(c)[0]

    def get_config(self):
        return {**super().get_config(), "weights": self.weights_, "capacity": self.capacity,
                "gamma": self.gamma}


def make_data(n: int, rng: np.random.Generator, B: np.ndarray):
    """Features z ~ N(0, I); values c = ((Bz/√p + 3)^4 / 3.5^4 + 0.1) · noise."""
    z = rng.standard_normal((n, N_FEATURES))
    c = ((z @ B.T / np.sqrt(N_FEATURES) + 3) ** 4 / 3.5**4 + 0.1)
    c *= rng.uniform(0.8, 1.2, c.shape)
    return z.astype("float32"), c.astype("float32")


def regret(knapsack: Knapsack, c_hat, c) -> float:
    """Mean over days of cᵀx*(c) − cᵀx*(ĉ) (≥ 0)."""
    best = np.sum(c * knapsack(tf.constant(c)).numpy(), 1)
    got = np.sum(c * knapsack(tf.constant(c_hat)).numpy(), 1)
    return float(np.mean(best - got))


class Bar(keras.callbacks.Callback):
    """A tqdm bar over the epochs of ``model.fit``; collects the training loss."""

    def __init__(self, epochs: int, desc: str):
        super().__init__()
        self.bar, self.losses = progress(range(epochs), desc=desc), []

    def on_epoch_end(self, epoch, logs=None):
        self.losses.append(float(logs["loss"]))
        next(self.bar, None)


def fit(model, z, target, loss, epochs: int, desc: str, lr: float) -> list[float]:
    model.compile(optimizer=keras.optimizers.Adam(lr), loss=loss)
    bar = Bar(epochs, desc)
    model.fit(z, target, epochs=epochs, batch_size=32, verbose=0, callbacks=[bar], shuffle=True)
    return bar.losses


def negative_value(c, x):
    """The decision-focused loss: −cᵀx (the regret up to a term free of the model)."""
    return -tf.reduce_sum(c * x, axis=-1)


def plot(losses, regrets, predictions, c_test, out) -> pathlib.Path:
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    axes[0].plot(losses, color="tab:green")
    axes[0].set(xlabel="epoch", ylabel="−cᵀx*(ĉ), training mean",
                title="Decision-focused training (model.fit)")
    names = list(regrets)
    axes[1].bar(names, [regrets[k] for k in names],
                color=["tab:gray", "tab:blue", "tab:green"][: len(names)])
    for i, k in enumerate(names):
        axes[1].text(i, regrets[k], f"{regrets[k]:.3f}", ha="center", va="bottom")
    axes[1].set(ylabel="mean regret (held out)", title="Regret of the decisions")
    for (name, c_hat), color in zip(reversed(predictions.items()), ["tab:green", "tab:blue"],
                                    strict=True):
        axes[2].scatter(c_test.ravel(), c_hat.ravel(), s=3, alpha=0.4, color=color, label=name)
    lim = [0, float(c_test.max())]
    axes[2].plot(lim, lim, "k--", lw=1)
    axes[2].set(xlabel="true value c", ylabel="predicted value ĉ", title="Predictions (held out)")
    axes[2].legend(fontsize=8, markerscale=4)
    return save(fig, out, "decision_focused_keras")


def main(quick: bool = False, out: pathlib.Path | str | None = None) -> dict[str, float]:
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    B = rng.binomial(1, 0.5, (N_ITEMS, N_FEATURES)) * 1.0
    weights = rng.uniform(1, 3, N_ITEMS).round(2)
    knapsack = Knapsack(weights, capacity=float(0.3 * weights.sum()))
    z_train, c_train = make_data(160 if quick else 480, rng, B)
    z_test, c_test = make_data(64 if quick else 400, rng, B)
    epochs = 12 if quick else 25

    two_stage = keras.Sequential([keras.Input((N_FEATURES,)), keras.layers.Dense(N_ITEMS)])
    fit(two_stage, z_train, c_train, "mse", 4 * epochs, "two-stage (MSE)", lr=0.05)
    predictor = keras.layers.Dense(N_ITEMS)
    decision = keras.Sequential([keras.Input((N_FEATURES,)), predictor, knapsack])
    losses = fit(decision, z_train, c_train, negative_value, epochs, "decision-focused",
                 lr=0.05)

    c_two = two_stage.predict(z_test, verbose=0)
    c_dfl = predictor(z_test).numpy()
    regrets = {
        "mean value": regret(knapsack, np.tile(c_train.mean(0), (len(c_test), 1)), c_test),
        "two-stage": regret(knapsack, c_two, c_test),
        "decision-focused": regret(knapsack, c_dfl, c_test),
    }
    metrics = {
        **{f"regret, {k}": v for k, v in regrets.items()},
        "regret ratio (two-stage / decision-focused)": regrets["two-stage"]
        / regrets["decision-focused"],
        "MSE of ĉ, two-stage": float(np.mean((c_two - c_test) ** 2)),
        "MSE of ĉ, decision-focused": float(np.mean((c_dfl - c_test) ** 2)),
        "first loss": losses[0],
        "final loss": losses[-1],
    }
    path = plot(losses, regrets, {"two-stage": c_two, "decision-focused": c_dfl}, c_test, out)
    report(f"Decision-focused knapsack ({epochs} epochs, figure {path})", metrics)
    return metrics


if __name__ == "__main__":
    quick, out = cli(__doc__)
    main(quick=quick, out=out)
