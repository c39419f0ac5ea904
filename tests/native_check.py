"""The shared check of a problem on the native backend: outputs equal Clarabel's, the
batched IPM solves every element itself, gradients match finite differences."""

from __future__ import annotations

import numpy as np
import torch

from convexlayers._core import SolutionMap
from convexlayers.solvers._native import REDUCED_TOL, _solve, batch_qp
from convexlayers.torch import CvxpyLayer
from fd import central_difference, directional, directions, weights


def numpy_layer(layer):
    """The layer as a function of NumPy values returning NumPy outputs (no grad)."""
    def f(vals):
        with torch.no_grad():
            return [o.numpy() for o in layer(*[torch.tensor(v) for v in vals])]
    return f


def check_native(prob, params, variables, values, rng) -> None:
    native = CvxpyLayer(prob, parameters=params, variables=variables, solver="NATIVE")
    clarabel = CvxpyLayer(prob, parameters=params, variables=variables, solver="CLARABEL")
    for a, b in zip(numpy_layer(native)(values), numpy_layer(clarabel)(values), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8)
    # exact after polishing (an element the IPM stopped short of 1e-9 keeps the status
    # OPTIMAL_INACCURATE; its residual says it was made exact)
    assert native.info.solver == "NATIVE" and not native.info.failed
    assert (native.info.residual <= 1e-9).all()
    # the batched IPM itself solved every element (none was handed to Clarabel)
    smap = SolutionMap(prob, params, variables)
    theta, _ = smap._theta(values)
    data = smap.program("NATIVE").data
    res = _solve(batch_qp(data, data.apply(theta)), {"tol": 1e-9, "max_iter": 50}, None)
    assert (res.error <= REDUCED_TOL).all()
    w = weights(numpy_layer(native)(values), rng)
    tensors = [torch.tensor(v, requires_grad=True) for v in values]
    loss = sum((torch.tensor(wk) * o).sum() for wk, o in zip(w, native(*tensors), strict=True))
    grads = [g.numpy() for g in torch.autograd.grad(loss, tensors)]
    d = directions(params, values, rng)
    fd = central_difference(numpy_layer(native), values, d, w, h=1e-6)
    assert abs(directional(grads, d) - fd) <= 1e-6 * (1 + abs(fd))


def check_max_step(cones, v, other, dv, primal: bool) -> None:
    """The scaling's step to the boundary from v (its s if ``primal``, else its z) along
    dv: just inside at 0.999 of it, outside at 1.001 where it is below 1."""
    sc = cones.scaling(v, other) if primal else cones.scaling(other, v)
    alpha = sc.max_step(v, dv, primal)
    assert (cones.min_eig(v + 0.999 * alpha[:, None] * dv) > 0).all()
    hit = alpha < 1.0
    assert hit.sum() > 10
    assert (cones.min_eig(v[hit] + 1.001 * alpha[hit, None] * dv[hit]) < 0).all()
