"""Batching rules and input validation shared by every framework adapter.

Each parameter value has either the parameter's shape (unbatched) or a leading
batch dimension ``(B, *shape)``. Batched values must share B; unbatched ones are
broadcast. If any value is batched the outputs are batched, and an explicit batch
of 1 keeps its dimension. Shape checks need only the shapes, so adapters that
trace (``jax.jit``, ``tf.function``) run them at trace time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from convexlayers._errors import ParameterError
from convexlayers.compile import OutputSpec, ParamSpec, unvec_f, vec_f


@dataclass(frozen=True)
class BatchSpec:
    """How a call is batched.

    Attributes:
        size: the batch size B (1 for an unbatched call).
        batched: whether the outputs carry a batch dimension.
        per_param: for each parameter, whether its value is batched.
    """

    size: int
    batched: bool
    per_param: tuple[bool, ...]


def batch_spec(specs: Sequence[ParamSpec], shapes: Sequence[tuple[int, ...] | None]) -> BatchSpec:
    """Check the number and shapes of the values; infer the batch.

    Raises:
        ParameterError: wrong count, a None value, a wrong shape, or batch sizes that disagree.
    """
    if len(shapes) != len(specs):
        names = ", ".join(s.name for s in specs)
        raise ParameterError(
            f"the layer takes {len(specs)} parameter values ({names}, in this order), "
            f"received {len(shapes)}."
        )
    # Keyed by position: two parameters may share a name.
    per_param, sizes = [], {}
    for i, (spec, shape) in enumerate(zip(specs, shapes, strict=True)):
        if shape is None:
            raise ParameterError(
                f"parameter {spec.label}: received None; pass a tensor of shape {spec.shape}."
            )
        shape = tuple(int(d) for d in shape)
        if shape == spec.shape:
            per_param.append(False)
        elif len(shape) == len(spec.shape) + 1 and shape[1:] == spec.shape:
            per_param.append(True)
            sizes[i] = shape[0]
        else:
            raise ParameterError(
                f"parameter {spec.label}: expected shape {spec.shape} (or {('B', *spec.shape)} "
                f"for a batch), received {shape}."
            )
    if len(set(sizes.values())) > 1:
        listed = ", ".join(f"{specs[k].label} has {v}" for k, v in sizes.items())
        raise ParameterError(
            f"parameters: batch sizes disagree ({listed}). Batched values must share the "
            "leading dimension; unbatched values are broadcast."
        )
    size = next(iter(sizes.values()), 1)
    return BatchSpec(size=size, batched=bool(sizes), per_param=tuple(per_param))


def flatten(specs: Sequence[ParamSpec], values: Sequence[np.ndarray], batch: BatchSpec):
    """Stack parameter values into θ of shape (B, p), broadcasting unbatched ones."""
    blocks = [np.zeros((batch.size, 0))]
    for spec, value, batched in zip(specs, values, batch.per_param, strict=True):
        value = np.asarray(value, dtype=np.float64)
        value = value if batched else np.broadcast_to(value, (batch.size, *spec.shape))
        blocks.append(vec_f(value, spec.shape))
    return np.concatenate(blocks, axis=1)


def unflatten_params(specs: Sequence[ParamSpec], theta: np.ndarray, batch: BatchSpec):
    """θ-shaped (B, p) array -> one array per parameter; unbatched ones summed over B.

    This is the adjoint of :func:`flatten` (broadcasting's adjoint is a sum).
    """
    out = []
    for spec, batched in zip(specs, batch.per_param, strict=True):
        block = unvec_f(theta[:, spec.offset : spec.offset + spec.size], spec.shape)
        out.append(block if batched else block.sum(axis=0))
    return out


def split_outputs(specs: Sequence[OutputSpec], stacked: np.ndarray, batch: BatchSpec):
    """(B, n_out) -> one array per output, without the batch axis for an unbatched call."""
    out = [unvec_f(stacked[:, o.offset : o.offset + o.size], o.shape) for o in specs]
    return out if batch.batched else [np.asarray(o[0]) for o in out]


def stack_outputs(specs: Sequence[OutputSpec], arrays: Sequence, batch: BatchSpec):
    """One array per output (None for zero) -> (B, n_out); the adjoint of :func:`split_outputs`."""
    blocks = [np.zeros((batch.size, 0))]
    for spec, a in zip(specs, arrays, strict=True):
        if a is None:
            blocks.append(np.zeros((batch.size, spec.size)))
            continue
        a = np.asarray(a, dtype=np.float64)
        a = a if batch.batched else a[None]
        blocks.append(vec_f(np.broadcast_to(a, (batch.size, *spec.shape)), spec.shape))
    return np.concatenate(blocks, axis=1)


def output_shapes(specs: Sequence[OutputSpec], batch: BatchSpec) -> list[tuple[int, ...]]:
    lead = (batch.size,) if batch.batched else ()
    return [(*lead, *o.shape) for o in specs]
