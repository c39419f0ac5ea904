"""The solve and its vector-Jacobian product as ``torch.library`` custom ops.

Registering the solve as an opaque custom op with an autograd formula lets
``torch.compile`` keep a model with the layer in one graph: the op runs the
NumPy solver on CPU in float64 and its fake implementation gives the output
shapes. Layers are found through an integer handle, because custom ops take
tensors and plain values only; a copied or unpickled layer registers itself
anew. The op records each call's diagnostics on its layer when it finishes;
what the backward needs (the solver state and the forward's diagnostics)
travels as tensors saved for backward, so calls never mix.
"""

from __future__ import annotations

import itertools
import json
import weakref
from typing import Any, Protocol

import numpy as np
import torch

from convexlayers._core import STATE_SIZE, SolutionMap, SolveInfo

_LAYERS: dict[int, weakref.ref] = {}
_COUNTER = itertools.count()

_SECOND_ORDER = (
    "CvxpyLayer has first derivatives only: a gradient of its gradient (create_graph=True "
    "followed by another backward, torch.autograd.functional.hessian, gradient penalties) "
    "is not implemented."
)


class _Layer(Protocol):
    _map: SolutionMap

    def _record(self, info: SolveInfo) -> None: ...


def register(layer: Any) -> int:
    """Register a layer; its entry goes when the layer is collected."""
    handle = next(_COUNTER)
    _LAYERS[handle] = weakref.ref(layer)
    weakref.finalize(layer, _LAYERS.pop, handle, None)
    return handle


def _lookup(handle: int) -> _Layer:
    layer = _LAYERS.get(handle)
    layer = None if layer is None else layer()
    if layer is None:
        raise RuntimeError(
            "this CvxpyLayer call refers to a layer that no longer exists (it was garbage-"
            "collected); keep a reference to the layer while its outputs are in use."
        )
    return layer


@torch.compiler.assume_constant_result
def encode(solver_args: tuple[tuple[str, Any], ...], on_failure: str | None,
           warm_start: bool = False) -> str:
    """A call's options as a JSON string, the form a custom op can take.

    ``torch.compile`` cannot trace the JSON encoder: it calls this function while
    tracing and keeps the string as a constant of the graph. The options must then be
    Python constants (literals, or values closed over: Dynamo guards on them).

    Args:
        solver_args: the call's ``solver_args`` as a tuple of (key, value) items.
        on_failure: the call's ``on_failure``, or None.
        warm_start: the call's ``warm_start``.
    """
    if not solver_args and on_failure is None and not warm_start:
        return "{}"
    return json.dumps({"solver_args": dict(solver_args), "on_failure": on_failure,
                       "warm_start": warm_start}, sort_keys=True)


def _decode(options: str) -> tuple[dict, str | None, bool]:
    opts = json.loads(options)
    return opts.get("solver_args", {}), opts.get("on_failure"), opts.get("warm_start", False)


def _np(tensors: list[torch.Tensor]) -> list[np.ndarray]:
    return [t.detach().cpu().numpy() for t in tensors]


def _torch(arrays) -> list[torch.Tensor]:
    return [torch.from_numpy(np.array(a, dtype=np.float64, order="C")) for a in arrays]


@torch.library.custom_op("convexlayers::solve", mutates_args=())
def solve_op(params: list[torch.Tensor], handle: int, options: str) -> list[torch.Tensor]:
    """float64 CPU parameter values -> outputs, then the state for the backward pass."""
    layer = _lookup(handle)
    solver_args, on_failure, warm_start = _decode(options)
    sol = layer._map.solve(_np(params), solver_args, on_failure, warm_start)
    layer._record(sol.info)
    return _torch([*sol.outputs, *sol.state])


@solve_op.register_fake
def _(params, handle, options):
    smap = _lookup(handle)._map
    shapes = [tuple(p.shape) for p in params]
    batch = smap.batch_spec(shapes).size
    backend, _ = smap.backend(_decode(options)[0])
    state = smap.state_shapes(backend.name, batch)
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
    layer = _lookup(handle)
    grads, info = layer._map.vjp(_np(params), _np(state), _np(cotangents), solver)
    layer._record(info)
    return _torch(grads)


@solve_vjp_op.register_fake
def _(params, state, cotangents, handle, solver):
    return [torch.empty_like(p) for p in params]


def _setup_context(ctx, inputs, output):
    params, handle, options = inputs
    layer = _lookup(handle)
    ctx.layer = layer  # keeps a layer built inline alive until its backward has run
    smap = layer._map
    ctx.num_outputs = len(smap.outputs)
    ctx.save_for_backward(*params, *output[len(smap.outputs):])
    ctx.num_params = len(params)
    ctx.handle = handle
    ctx.solver = smap.backend(_decode(options)[0])[0].name


def _backward(ctx, grads):
    saved = ctx.saved_tensors
    params, state = list(saved[: ctx.num_params]), list(saved[ctx.num_params :])
    assert len(state) == STATE_SIZE
    shapes = _lookup(ctx.handle)._map.output_shapes([tuple(p.shape) for p in params])
    cotangents = [
        params[0].new_zeros(shape) if g is None else g
        for g, shape in zip(grads[: ctx.num_outputs], shapes, strict=True)
    ]
    gparams = solve_vjp_op(params, state, cotangents, ctx.handle, ctx.solver)
    return gparams, None, None


def _no_second_order(ctx, grads):
    raise NotImplementedError(_SECOND_ORDER)


solve_op.register_autograd(_backward, setup_context=_setup_context)
solve_vjp_op.register_autograd(_no_second_order, setup_context=lambda ctx, inputs, output: None)
