"""The solve and its vector-Jacobian product as ``torch.library`` custom ops.

Registering the solve as an opaque custom op with an autograd formula lets
``torch.compile`` keep a model with the layer in one graph: the op runs the
NumPy solver on CPU in float64 and its fake implementation gives the output
shapes. Layers are found through an integer handle, because custom ops take
tensors and plain values only.
"""

from __future__ import annotations

import itertools
import json
import weakref

import numpy as np
import torch

from convexlayers._core import SolutionMap

_LAYERS: dict[int, weakref.ref] = {}
_COUNTER = itertools.count()


def register(solution_map: SolutionMap, owner: object) -> int:
    """Register a layer's solution map; the entry goes when ``owner`` is collected."""
    handle = next(_COUNTER)
    _LAYERS[handle] = weakref.ref(solution_map)
    weakref.finalize(owner, _LAYERS.pop, handle, None)
    return handle


def _lookup(handle: int) -> SolutionMap:
    return _LAYERS[handle]()


def _np(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    return [t.detach().cpu().numpy() for t in tensors]


def _torch(arrays) -> list[torch.Tensor]:
    return [torch.from_numpy(np.array(a, dtype=np.float64, order="C")) for a in arrays]


@torch.library.custom_op("convexlayers::solve", mutates_args=())
def solve_op(
    params: list[torch.Tensor], handle: int, solver_args: str
) -> list[torch.Tensor]:
    """float64 CPU parameter values -> outputs, then x, y, s (the state for backward)."""
    sol = _lookup(handle).solve(_np(params), json.loads(solver_args))
    return _torch([*sol.outputs, sol.x, sol.y, sol.s])


@solve_op.register_fake
def _(params, handle, solver_args):
    smap = _lookup(handle)
    shapes = [tuple(p.shape) for p in params]
    batch = smap.batch_spec(shapes).size
    backend, _ = smap.backend(json.loads(solver_args))
    n, m = smap.state_sizes(backend.name)
    state = [(batch, n), (batch, m), (batch, m)]
    return [params[0].new_empty(s) for s in [*smap.output_shapes(shapes), *state]]


@torch.library.custom_op("convexlayers::solve_vjp", mutates_args=())
def solve_vjp_op(
    params: list[torch.Tensor],
    state: list[torch.Tensor],
    cotangents: list[torch.Tensor],
    handle: int,
    solver: str,
) -> list[torch.Tensor]:
    """Cotangents of the outputs -> cotangents of the parameter values."""
    x, y, s = _np(state)
    grads = _lookup(handle).vjp(_np(params), x, y, s, _np(cotangents), solver)
    return _torch(grads)


@solve_vjp_op.register_fake
def _(params, state, cotangents, handle, solver):
    return [torch.empty_like(p) for p in params]


def _setup_context(ctx, inputs, output):
    params, handle, solver_args = inputs
    smap = _lookup(handle)
    ctx.num_outputs = len(smap.outputs)
    ctx.save_for_backward(*params, *output[len(smap.outputs):])
    ctx.num_params = len(params)
    ctx.handle = handle
    ctx.solver = smap.backend(json.loads(solver_args))[0].name


def _backward(ctx, grads):
    saved = ctx.saved_tensors
    params, state = list(saved[: ctx.num_params]), list(saved[ctx.num_params :])
    shapes = _lookup(ctx.handle).output_shapes([tuple(p.shape) for p in params])
    cotangents = [
        params[0].new_zeros(shape) if g is None else g
        for g, shape in zip(grads[: ctx.num_outputs], shapes, strict=True)
    ]
    gparams = solve_vjp_op(params, state, cotangents, ctx.handle, ctx.solver)
    return gparams, None, None


solve_op.register_autograd(_backward, setup_context=_setup_context)
