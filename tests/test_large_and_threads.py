"""Large problems (sparse derivative path) and the torch oneMKL batched-solve hang.

The torch 2.13 CPU build hangs in batched ``torch.linalg.solve``/``lu_factor`` with
batch >= 2, matrices above ~200x200 and several threads. The derivative engine
solves with NumPy/SciPy LAPACK only; these tests run exactly that configuration
in a subprocess with a time limit, so a regression shows as a failure, not a hang.
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import textwrap

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
import torch

import convexlayers
from convexlayers.derivative import DenseLU, SparseLU
from convexlayers.torch import CvxpyLayer

_HANG_GUARD = textwrap.dedent(
    """
    import cvxpy as cp, numpy as np, torch
    from convexlayers.derivative import DenseLU
    from convexlayers.torch import CvxpyLayer
    torch.set_num_threads(4)
    n, m = 150, 120                      # KKT system of n + 2m + ... > 200 unknowns
    rng = np.random.default_rng(0)
    x = cp.Variable(n)
    A, b = cp.Parameter((m, n)), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x) + cp.sum(A @ x)), [A @ x <= b, x >= -1])
    layer = CvxpyLayer(prob, [A, b], [x], linear_solver=DenseLU())
    A_t = torch.tensor(rng.standard_normal((3, m, n)) / 10, requires_grad=True)
    b_t = torch.tensor(rng.uniform(1, 2, (3, m)), requires_grad=True)
    sol, = layer(A_t, b_t)
    sol.sum().backward()
    assert torch.isfinite(A_t.grad).all()
    (_, n_x), (_, n_y) = layer._map.state_shapes("CLARABEL", 1)[:2]
    print("ok", layer.info.derivative.method, n_x + n_y)
    """
)


def test_batched_dense_backward_with_threads_does_not_hang():
    done = subprocess.run([sys.executable, "-c", _HANG_GUARD], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok ('lu', 'lu', 'lu')")
    assert int(done.stdout.split()[-1]) > 200


def test_framework_free_core_imports_no_framework():
    """The architecture rule: the core never imports a deep-learning framework.

    (cvxpy itself imports JAX when it is installed, so sys.modules cannot tell.)
    """
    root = pathlib.Path(convexlayers.__file__).parent
    frameworks = {"torch", "jax", "jaxlib", "tensorflow", "keras", "mlx"}
    offenders = []
    for package in ("_core", "compile", "cones", "derivative", "solvers"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.name}: {n}" for n in names
                              if n.split(".")[0] in frameworks]
    assert offenders == []


def test_dense_and_sparse_derivatives_agree_through_the_layer():
    """Element 1 is degenerate: `norm(x) <= 3` is inactive, so CVXPY's epigraph variable
    is not unique and J is singular; x is unique, and the regularized factorization with
    refinement gives its derivative on the fast path (no least squares), equal to
    central finite differences."""
    rng = np.random.default_rng(1)
    n, m = 40, 30
    x = cp.Variable(n)
    A, b, c = cp.Parameter((m, n)), cp.Parameter(m), cp.Parameter(n)
    prob = cp.Problem(cp.Minimize(cp.sum_squares(x) + c @ x), [A @ x <= b, cp.norm(x) <= 3])
    values = [rng.standard_normal((2, m, n)), rng.uniform(1, 2, (2, m)), rng.standard_normal(n)]
    grads = {}
    for name, solver in [("dense", DenseLU()), ("sparse", SparseLU())]:
        layer = CvxpyLayer(prob, [A, b, c], [x], linear_solver=solver)
        ts = [torch.tensor(v, requires_grad=True) for v in values]
        (sol,) = layer(*ts)
        (sol * torch.arange(n, dtype=torch.float64)).sum().backward()
        grads[name] = [t.grad for t in ts]
        direct = "lu" if name == "dense" else "sparse_lu"
        assert layer.info.derivative.method == (direct, direct)
        assert (layer.info.derivative.residual < 1e-10).all()  # consistent system
    for gd, gs in zip(grads["dense"], grads["sparse"], strict=True):
        torch.testing.assert_close(gd, gs, atol=1e-9, rtol=1e-9)
    d = rng.standard_normal(n)
    h = np.sqrt(np.finfo(float).eps) * np.abs(values[2]).max()
    w = torch.arange(n, dtype=torch.float64)
    with torch.no_grad():
        shifted = [layer(*[torch.tensor(v) for v in values[:2]], torch.tensor(values[2] + t * d),
                         solver_args={"eps": 1e-10})[0] for t in (h, -h)]
    fd = float((w * (shifted[0] - shifted[1])).sum() / (2 * h))
    assert abs(float(grads["dense"][2] @ torch.tensor(d)) - fd) < 1e-5 * (1 + abs(fd))


def test_sparse_qp_with_5000_variables():
    """Built once (sparse maps, no dense intermediate), solved and differentiated sparsely."""
    rng = np.random.default_rng(2)
    n, m = 5000, 2500
    G = sp.random(m, n, density=1e-3, random_state=3, format="csc")
    x = cp.Variable(n)
    q, h = cp.Parameter(n), cp.Parameter(m)
    prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x),
                      [G @ x <= h, x >= -1, x <= 1])
    layer = CvxpyLayer(prob, [q, h], [x])
    q_t = torch.tensor(rng.standard_normal((2, n)), requires_grad=True)
    h_t = torch.tensor(rng.uniform(0.5, 1.0, m), requires_grad=True)
    (sol,) = layer(q_t, h_t)
    assert sol.shape == (2, n)
    w = torch.tensor(rng.standard_normal((2, n)))
    (w * sol).sum().backward()
    assert layer.info.derivative.method == ("sparse_lu", "sparse_lu")
    assert (layer.info.derivative.residual < 1e-8).all()
    # One directional derivative against a central difference. At this size Clarabel's
    # default solution has a KKT residual ~1e-5 (layer.info.residual), which bounds
    # the agreement.
    assert (layer.info.residual < 1e-4).all()
    d = torch.tensor(rng.standard_normal((2, n)))
    with torch.no_grad():
        plus, minus = layer(q_t + 1e-4 * d, h_t)[0], layer(q_t - 1e-4 * d, h_t)[0]
    fd = float((w * (plus - minus)).sum() / 2e-4)
    assert abs(float((q_t.grad * d).sum()) - fd) < 1e-2 * abs(fd)
