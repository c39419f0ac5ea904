"""The solve and its vector-Jacobian product as ``torch.library`` custom ops.

Registering the solve as an opaque custom op with an autograd formula lets
``torch.compile`` keep a model with the layer in one graph: the op runs the
NumPy solver on CPU float64, and its fake implementation tells the compiler
the output shapes. Layers are found through an integer handle, because custom
ops take tensors and plain values only.
"""

from __future__ import annotations

import itertools
import json
import weakref

import numpy as np
import torch

from convexlayers._core import SolutionMap
from convexlayers.solvers import get_solver

_LAYERS: dict[int, weakref.ref] = {}
_COUNTER = itertools.count()


def register(solution_map: SolutionMap, owner: object) -> int:
    """Register a layer's solution map; it is dropped when ``owner`` is collected."""
    handle = next(_COUNTER)
    _LAYERS[handle] = weakref.ref(solution_map)
    weakref.finalize(owner, _LAYERS.pop, handle, None)
    return handle


def _lookup(handle: int) -> SolutionMap:
    solution_map = _LAYERS[handle]()
    if solution_map is None:  # pragma: no cover - the owning layer was collected
        raise RuntimeError("convexlayers: this layer no longer exists")
    return solution_map


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


@torch.library.custom_op("convexlayers::solve", mutates_args=())
def solve_op(
    theta: torch.Tensor, handle: int, batched: bool, solver: str, solver_args: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """θ (B, p) float64 -> stacked outputs (B, n_out) and the cone solution x, y, s."""
    smap = _lookup(handle)
    theta_np = _np(theta)
    smap.check_values(theta_np, batched)
    args = {**json.loads(solver_args), "solve_method": solver}
    out, x, y, s = smap.solve(theta_np, batched, args)
    return tuple(torch.from_numpy(a) for a in (out, x, y, s))


@solve_op.register_fake
def _(theta, handle, batched, solver, solver_args):
    prog = _lookup(handle).program(get_solver(solver))
    batch = theta.shape[0]
    sizes = (prog.R.shape[0], prog.n, prog.m, prog.m)
    return tuple(theta.new_empty((batch, k)) for k in sizes)


@torch.library.custom_op("convexlayers::solve_vjp", mutates_args=())
def solve_vjp_op(
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    s: torch.Tensor,
    g: torch.Tensor,
    handle: int,
    solver: str,
) -> torch.Tensor:
    """Cotangent of the stacked outputs -> cotangent of θ."""
    smap = _lookup(handle)
    gtheta = smap.vjp(solver, _np(theta), _np(x), _np(y), _np(s), _np(g))
    return torch.from_numpy(gtheta)


@solve_vjp_op.register_fake
def _(theta, x, y, s, g, handle, solver):
    return torch.empty_like(theta)


def _setup_context(ctx, inputs, output):
    theta, handle, _, solver, _ = inputs
    _, x, y, s = output
    ctx.save_for_backward(theta, x, y, s)
    ctx.handle, ctx.solver = handle, solver


def _backward(ctx, g_out, g_x, g_y, g_s):
    theta, x, y, s = ctx.saved_tensors
    gtheta = solve_vjp_op(theta, x, y, s, g_out, ctx.handle, ctx.solver)
    return gtheta, None, None, None, None


solve_op.register_autograd(_backward, setup_context=_setup_context)
