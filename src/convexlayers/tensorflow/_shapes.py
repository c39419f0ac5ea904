"""What the static shapes of a call allow us to check and to promise while tracing.

Eagerly every shape is known. In a ``tf.function`` or a Keras model the batch
dimension is usually ``None`` (and with ``input_signature`` or
``reduce_retracing`` any dimension may be). The rules themselves live in
:meth:`SolutionMap.batch_spec`; this module only decides when they can run at
trace time and what static shape to give the outputs otherwise. Everything that
cannot be checked here is checked again by the solve callback at run time,
which sees the real shapes.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from convexlayers._core import SolutionMap


def static_output_shapes(
    smap: SolutionMap, shapes: Sequence[tf.TensorShape | None]
) -> list[tf.TensorShape]:
    """Check the call's static shapes where they suffice; give the outputs' static shapes.

    Args:
        smap: the layer's solution map.
        shapes: the static shape of each parameter value (None for a None value).

    Returns:
        One (possibly partly unknown) shape per output.

    Raises:
        ParameterError: wrong count, a None value, a wrong shape, or disagreeing batch
            sizes, when the static shapes show it.
    """
    specs = smap.parameters
    if len(shapes) != len(specs):
        smap.batch_spec(list(shapes))  # raises: the count is checked first
    if any(s is None for s in shapes):
        smap.batch_spec([None if s is None else p.shape
                         for s, p in zip(shapes, specs, strict=True)])
    checkable = [_checkable(s, p.shape) for s, p in zip(shapes, specs, strict=True)]
    known = [k for k in checkable if k is not None]
    if len(known) == len(checkable):
        # Statically unknown batch sizes take a known one (or 1): they are checked at run time.
        sizes = [k[0] for k, p in zip(known, specs, strict=True)
                 if len(k) == len(p.shape) + 1 and k[0] is not None]
        fill = sizes[0] if sizes else 1
        concrete = [tuple(fill if d is None else d for d in k) for k in known]
        batch = smap.batch_spec(concrete)
        lead = [sizes[0] if sizes else None] if batch.batched else []
        return [tf.TensorShape([*lead, *o.shape]) for o in smap.outputs]
    return _partial_output_shapes(smap, shapes)


def _checkable(shape: tf.TensorShape, spec_shape: tuple[int, ...]) -> tuple | None:
    """The dims if all are known but perhaps a leading batch dim (None there); else None."""
    if shape.rank is None:
        return None
    dims = shape.as_list()
    if None not in dims:
        return tuple(dims)
    if len(dims) == len(spec_shape) + 1 and dims[0] is None and None not in dims[1:]:
        return (None, *dims[1:])
    return None


def _partial_output_shapes(
    smap: SolutionMap, shapes: Sequence[tf.TensorShape]
) -> list[tf.TensorShape]:
    """Output shapes when some input's shape is too unknown to check now."""
    ranks = [s.rank for s in shapes]
    specs = smap.parameters
    if any(r is not None and r == len(p.shape) + 1 for r, p in zip(ranks, specs, strict=True)):
        return [tf.TensorShape([None, *o.shape]) for o in smap.outputs]
    if all(r is not None and r == len(p.shape) for r, p in zip(ranks, specs, strict=True)):
        return [tf.TensorShape(o.shape) for o in smap.outputs]
    return [tf.TensorShape(None) for _ in smap.outputs]
