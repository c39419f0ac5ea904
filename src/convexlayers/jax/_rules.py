"""Batching and differentiation rules of the primitives in :mod:`._primitives`.

Batching (``vmap``): the mapped axis of size V is merged with the layer's own
batch axis of size B (1 for an unbatched call) into one batch of V·B elements,
and split back after the call. Values that are not mapped, and values that the
layer would broadcast, are broadcast first, so that the merged call has every
parameter batched and no cotangent is summed across the mapped axis.

Transposition: ``jvp_p`` is linear in its tangents and ``vjp_p`` in its
cotangents; the parameter values and the state (x, y, s) are constants of the
linear map. Each one's transpose is the other, which is what lets JAX derive
``grad``/``jacrev`` from the custom JVP rule of the layer.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.interpreters import ad, batching

from convexlayers._core import STATE_SIZE, SolutionMap
from convexlayers.jax._primitives import jvp_p, solve_p, split_args, vjp_p

_NOT_MAPPED = None  # how a batching rule is told that an operand is not vmapped
_STATE = [True] * STATE_SIZE  # the state operands always carry the batch axis

_SECOND_ORDER = (
    "convexlayers.jax differentiates the solution map to first order only: "
    "jax.grad, jax.jvp, jax.jacfwd and jax.jacrev work, but derivatives of derivatives "
    "(jax.hessian, grad of grad) are not implemented."
)


class _Merge:
    """Merge a vmap axis (size V) with the layer's batch axis (size B) and split it back."""

    def __init__(self, smap: SolutionMap, args, dims) -> None:
        k = len(smap.parameters)
        self.size = next(a.shape[d] for a, d in zip(args, dims, strict=True)
                         if d is not _NOT_MAPPED)
        shapes = [a.shape if d is _NOT_MAPPED else a.shape[:d] + a.shape[d + 1 :]
                  for a, d in zip(args[:k], dims[:k], strict=True)]
        self.spec = smap.batch_spec(shapes)

    def merge(self, x, dim, has_batch: bool):
        """(V at ``dim``, [B,] *core) -> (V·B, *core); broadcast where V or B is missing."""
        v, b = self.size, self.spec.size
        x = jnp.broadcast_to(x, (v, *x.shape)) if dim is _NOT_MAPPED else jnp.moveaxis(x, dim, 0)
        if not has_batch:
            x = jnp.broadcast_to(x[:, None], (v, b, *x.shape[1:]))
        return x.reshape((v * b, *x.shape[2:]))

    def split(self, x, has_batch: bool):
        """(V·B, *core) -> (V, [B,] *core).

        Without ``has_batch`` the B axis is summed: the adjoint of the broadcast in
        :meth:`merge` for a parameter's cotangent, a plain squeeze (B = 1) for the
        outputs of an unbatched call.
        """
        x = x.reshape((self.size, self.spec.size, *x.shape[1:]))
        return x if has_batch else x.sum(axis=1)

    def merge_all(self, args, dims, batched):
        return [self.merge(a, d, b) for a, d, b in zip(args, dims, batched, strict=True)]


def _solve_batch(args, dims, *, smap: SolutionMap, **params):
    mb = _Merge(smap, args, dims)
    outs = solve_p.bind(*mb.merge_all(args, dims, mb.spec.per_param), smap=smap, **params)
    k = len(smap.outputs)
    res = [mb.split(o, mb.spec.batched) for o in outs[:k]] + [mb.split(o, True) for o in outs[k:]]
    return res, [0] * len(res)


def _over_linear_only(prim, args, dims, smap: SolutionMap, params):
    """``vmap`` over tangents or cotangents only (``jacfwd``, ``jacrev``): one call per
    mapped slice at the same parameters and state, so each finds the forward pass's
    factorization and costs a few triangular solves, instead of one merged call on V
    copies of the batch that would factor every copy again."""
    k = len(smap.parameters) + STATE_SIZE
    if any(d is not _NOT_MAPPED for d in dims[:k]):
        return None
    size = next(a.shape[d] for a, d in zip(args, dims, strict=True) if d is not _NOT_MAPPED)
    fixed = list(args[:k])
    slices = []
    for v in range(size):
        linear = [a if d is _NOT_MAPPED else jnp.take(a, v, axis=d)
                  for a, d in zip(args[k:], dims[k:], strict=True)]
        slices.append(prim.bind(*fixed, *linear, smap=smap, **params))
    outs = [jnp.stack(parts) for parts in zip(*slices, strict=True)]
    return outs, [0] * len(outs)


def _jvp_batch(args, dims, *, smap: SolutionMap, **params):
    linear_only = _over_linear_only(jvp_p, args, dims, smap, params)
    if linear_only is not None:
        return linear_only
    mb = _Merge(smap, args, dims)
    per = list(mb.spec.per_param)
    outs = jvp_p.bind(*mb.merge_all(args, dims, [*per, *_STATE, *per]), smap=smap, **params)
    return [mb.split(o, mb.spec.batched) for o in outs], [0] * len(outs)


def _vjp_batch(args, dims, *, smap: SolutionMap, **params):
    linear_only = _over_linear_only(vjp_p, args, dims, smap, params)
    if linear_only is not None:
        return linear_only
    mb = _Merge(smap, args, dims)
    per, outs = list(mb.spec.per_param), [mb.spec.batched] * len(smap.outputs)
    grads = vjp_p.bind(*mb.merge_all(args, dims, [*per, *_STATE, *outs]), smap=smap, **params)
    return [mb.split(g, b) for g, b in zip(grads, per, strict=True)], [0] * len(grads)


def _transpose_to(other):
    """Transpose rule of a primitive linear in its last operands: bind ``other``."""

    def rule(cts, *args, smap: SolutionMap, **static):
        params, state, linear = split_args(args, smap)
        if any(ad.is_undefined_primal(a) for a in params + state):
            raise NotImplementedError(_SECOND_ORDER)
        nones = [None] * (len(params) + STATE_SIZE)
        if all(type(ct) is ad.Zero for ct in cts):
            return [*nones, *([None] * len(linear))]
        cts = [ad.instantiate_zeros(ct) for ct in cts]
        res = other.bind(*params, *state, *cts, smap=smap, **static)
        return [*nones, *(r if ad.is_undefined_primal(a) else None
                          for r, a in zip(res, linear, strict=True))]

    return rule


def _linear_jvp(prim):
    """JVP of a primitive linear in its last operands, at fixed parameters and state."""

    def rule(primals, tangents, *, smap: SolutionMap, **static):
        k = len(smap.parameters) + STATE_SIZE
        if any(type(t) is not ad.Zero for t in tangents[:k]):
            raise NotImplementedError(_SECOND_ORDER)
        out = prim.bind(*primals, smap=smap, **static)
        lin = [ad.instantiate_zeros(t) for t in tangents[k:]]
        return out, prim.bind(*primals[:k], *lin, smap=smap, **static)

    return rule


def _solve_jvp(primals, tangents, **params):
    # First-order derivatives go through the layer's custom JVP rule; JAX reaches this
    # only when it differentiates that rule itself, i.e. for a second derivative.
    raise NotImplementedError(_SECOND_ORDER)


batching.primitive_batchers[solve_p] = _solve_batch
batching.primitive_batchers[jvp_p] = _jvp_batch
batching.primitive_batchers[vjp_p] = _vjp_batch
ad.primitive_transposes[jvp_p] = _transpose_to(vjp_p)
ad.primitive_transposes[vjp_p] = _transpose_to(jvp_p)
ad.primitive_jvps[jvp_p] = _linear_jvp(jvp_p)
ad.primitive_jvps[vjp_p] = _linear_jvp(vjp_p)
ad.primitive_jvps[solve_p] = _solve_jvp
