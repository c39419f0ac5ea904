"""Days of training in miniature: many forward+backward calls, flat memory, same answers.

``CONVEXLAYERS_SOAK_ITERATIONS`` sets the number of calls (default 500; the README
reports a run with 20000).
"""

from __future__ import annotations

import gc
import os

import cvxpy as cp
import numpy as np
import torch

from convexlayers.torch import CvxpyLayer

ITERATIONS = int(os.environ.get("CONVEXLAYERS_SOAK_ITERATIONS", "500"))
# Allowed growth of the resident set between the warm-up and the last call.
MAX_GROWTH_MB = 16.0


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _layer_and_values():
    """A degenerate problem (an auxiliary variable of `norm1`) with SOC and inactive rows."""
    rng = np.random.default_rng(0)
    x = cp.Variable(6)
    A, b = cp.Parameter((8, 6)), cp.Parameter(8)
    prob = cp.Problem(
        cp.Minimize(cp.sum_squares(A @ x - b) + 0.1 * cp.norm1(x)), [cp.norm(x) <= 10, x >= -1]
    )
    layer = CvxpyLayer(prob, [A, b], [x])
    values = [torch.tensor(rng.standard_normal((4, 8, 6)), requires_grad=True),
              torch.tensor(rng.standard_normal((4, 8)), requires_grad=True)]
    return layer, values


def _step(layer, values):
    (x,) = layer(*values)
    grads = torch.autograd.grad(x.square().sum(), values)
    return x.detach(), [g.detach() for g in grads]


def test_soak_memory_is_flat_and_results_identical():
    layer, values = _layer_and_values()
    first = _step(layer, values)
    warmup = min(100, ITERATIONS // 4)
    base = None
    for i in range(ITERATIONS):
        x, grads = _step(layer, values)
        assert torch.equal(x, first[0])
        assert all(torch.equal(a, b) for a, b in zip(grads, first[1], strict=True))
        if i == warmup:
            gc.collect()
            base = _rss_mb()
    gc.collect()
    growth = _rss_mb() - base
    assert growth < MAX_GROWTH_MB, f"resident memory grew by {growth:.1f} MB"
