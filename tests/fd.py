"""Framework-free finite-difference checks of a layer's gradient.

A layer is seen as a function of NumPy parameter values returning NumPy outputs.
The check compares, along random directions d, the analytic directional
derivative ⟨∇L, d⟩ of L = Σ ⟨w_k, output_k⟩ with a central difference of L.
Directions respect the parameters' domains (symmetric for symmetric matrices).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def directions(parameters: Sequence, values: Sequence[np.ndarray], rng) -> list[np.ndarray]:
    """Random unit-scale directions, symmetric where the parameter is."""
    out = []
    for p, v in zip(parameters, values, strict=True):
        d = rng.standard_normal(np.shape(v))
        if p.attributes["symmetric"] or p.attributes["PSD"] or p.attributes["NSD"]:
            d = 0.5 * (d + np.swapaxes(d, -1, -2))
        out.append(d)
    return out


def weights(outputs: Sequence[np.ndarray], rng) -> list[np.ndarray]:
    return [rng.standard_normal(np.shape(o)) for o in outputs]


def central_difference(
    f: Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    values: Sequence[np.ndarray],
    d: Sequence[np.ndarray],
    w: Sequence[np.ndarray],
    h: float,
) -> float:
    """(L(θ + h d) − L(θ − h d)) / 2h with L = Σ ⟨w, f(θ)⟩."""

    def loss(t: float) -> float:
        outs = f([np.asarray(v) + t * dv for v, dv in zip(values, d, strict=True)])
        return sum(float(np.sum(wk * np.asarray(o))) for wk, o in zip(w, outs, strict=True))

    return (loss(h) - loss(-h)) / (2 * h)


def directional(grads: Sequence[np.ndarray], d: Sequence[np.ndarray]) -> float:
    return sum(float(np.sum(np.asarray(g) * dv)) for g, dv in zip(grads, d, strict=True))
