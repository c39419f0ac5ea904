"""The bad-input table (tests/bad_inputs.py) on the JAX layer, eagerly and under ``jax.jit``.

Under ``jit``, what the tracer sees (count, shapes, dtypes, settings) raises our own
exception while tracing. What only the values show raises in the host callback when the
compiled function runs: JAX reports it as ``jax.errors.JaxRuntimeError``, or as a plain
``ValueError`` once a compiled function has run successfully (JAX's C++ fast path); either
way the message ends with our exception's type and message.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bad_inputs import BUILD_ROWS, CALL_ROWS, CallRow, Raw, Result, check_row, row_id
from convexlayers.jax import CvxpyLayer

jax.config.update("jax_enable_x64", True)

MODES = ["eager", "jit"]
RUN_TIME_UNDER_JIT = (jax.errors.JaxRuntimeError, ValueError)


def _split(values: list) -> tuple[list[int], list]:
    """Positions and arrays of the values that are traced (not :class:`Raw`)."""
    idx = [i for i, v in enumerate(values) if not isinstance(v, Raw)]
    return idx, [jnp.asarray(values[i]) for i in idx]


def _program(row: CallRow, layer: CvxpyLayer, values: list, idx: list[int]):
    """The function of the traced values that the row probes."""

    def forward(*traced):
        vals = [v.value if isinstance(v, Raw) else None for v in values]
        for i, t in zip(idx, traced, strict=True):
            vals[i] = t
        return layer(*vals, **row.call)

    def loss(*traced):
        outs = forward(*traced)
        return jnp.sum(outs[0]), outs

    argnums = tuple(range(len(idx)))
    if row.probe == "grad":
        return jax.value_and_grad(loss, argnums=argnums, has_aux=True)
    if row.probe == "hessian":
        return jax.hessian(lambda *t: loss(*t)[0], argnums=argnums)
    return forward


def _run(row: CallRow, mode: str) -> Result:
    args, kwargs = row.layer()
    layer = CvxpyLayer(*args, **kwargs)
    values = row.values()
    idx, arrays = _split(values)
    fn = _program(row, layer, values, idx)
    result = jax.block_until_ready((jax.jit(fn) if mode == "jit" else fn)(*arrays))
    if row.probe == "grad":
        (_, outs), grads = result
        return Result([np.asarray(o) for o in outs], [o.dtype.name for o in outs],
                      [np.asarray(g) for g in grads])
    return Result([np.asarray(o) for o in result], [o.dtype.name for o in result])


def _expected(row: CallRow, mode: str):
    assert row.error is not None
    if mode == "jit" and row.when == "run":
        return RUN_TIME_UNDER_JIT
    return row.error


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("row", CALL_ROWS, ids=row_id)
def test_call(row, mode):
    check_row(row, lambda: _run(row, mode), lambda: _expected(row, mode))


@pytest.mark.parametrize("row", BUILD_ROWS, ids=row_id)
def test_construction(row):
    args, kwargs = row.build()
    with pytest.raises(row.error, match=row.match):
        CvxpyLayer(*args, **kwargs)
