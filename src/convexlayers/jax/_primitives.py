"""The solve, its JVP and its VJP as JAX primitives that call NumPy on the host.

Why three primitives rather than one ``jax.pure_callback`` inside a ``custom_vjp``:

* ``custom_vjp`` forbids forward mode (``jax.jvp``, ``jax.jacfwd``), and a
  ``custom_jvp`` whose tangent is a bare ``pure_callback`` cannot be transposed,
  so ``jax.grad`` fails. JAX derives reverse mode from forward mode only if the
  tangent map is built from transposable primitives. So the tangent map is the
  primitive ``jvp_p``, linear in its tangent operands, whose transpose rule is
  the primitive ``vjp_p`` (and the other way round).
* Each primitive has its own batching rule, which merges the ``vmap`` axis into
  the layer's batch axis: one host call solves the whole vmapped batch, and
  vmap over already batched values, over unbatched ones, or over a mix, all
  reduce to one ordinary batched call of :class:`SolutionMap`. The
  ``pure_callback`` inside the lowering is therefore never vmapped itself.
* Under ``jit`` each primitive lowers to a ``jax.pure_callback``; called eagerly
  it runs the NumPy code directly, so eager errors keep their own type
  (:class:`~convexlayers.ParameterError`, :class:`~convexlayers.SolverError`).

The primitives' static parameters are the :class:`SolutionMap` (hashed by
identity), the call's ``solver_args`` as a sorted tuple of items, its
``on_failure`` and ``warm_start``, the name of the backend that produced the state (x, y, s and
the forward's diagnostics) the derivatives need, and ``record``, the layer's
method that keeps the diagnostics of the last call that ran.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import ShapedArray
from jax.extend.core import Primitive
from jax.interpreters import mlir

from convexlayers._core import STATE_SIZE, SolutionMap
from convexlayers._errors import ConvexLayersError

solve_p = Primitive("convexlayers_solve")
jvp_p = Primitive("convexlayers_solve_jvp")
vjp_p = Primitive("convexlayers_solve_vjp")


def state_dtype() -> np.dtype:
    """dtype of the cone program's state x, y, s: float64 unless JAX runs in 32 bits."""
    return jax.dtypes.canonicalize_dtype(np.float64)


def split_args(args, smap: SolutionMap):
    """Operands of ``jvp_p``/``vjp_p`` -> (parameter values, state, linear operands)."""
    k = len(smap.parameters)
    return list(args[:k]), list(args[k : k + STATE_SIZE]), list(args[k + STATE_SIZE :])


def _f64(arrays) -> list[np.ndarray]:
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# -- host side (NumPy, float64) and the shapes it returns -----------------------------
def _solve_host(*params, smap: SolutionMap, solver_args: tuple, on_failure, warm_start,
                record):
    sol = smap.solve(_f64(params), dict(solver_args), on_failure, warm_start)
    record(sol.info)
    return [*sol.outputs, *sol.state]


def _solve_shapes(*params, smap: SolutionMap, solver_args: tuple, on_failure, warm_start,
                  record):
    shapes = [tuple(p.shape) for p in params]
    size = smap.batch_spec(shapes).size
    state = smap.state_shapes(smap.backend(dict(solver_args))[0].name, size)
    dtype = params[0].dtype if params else state_dtype()
    outs = [ShapedArray(s, dtype) for s in smap.output_shapes(shapes)]
    return [*outs, *(ShapedArray(s, state_dtype()) for s in state)]


def _jvp_host(*args, smap: SolutionMap, solver: str, record):
    params, state, tangents = split_args(args, smap)
    touts, info = smap.jvp(_f64(params), _f64(state), _f64(tangents), solver)
    record(info)
    return touts


def _jvp_shapes(*args, smap: SolutionMap, solver: str, record):
    params, _, tangents = split_args(args, smap)
    shapes = smap.output_shapes([tuple(p.shape) for p in params])
    return [ShapedArray(s, tangents[0].dtype) for s in shapes]


def _vjp_host(*args, smap: SolutionMap, solver: str, record):
    params, state, cotangents = split_args(args, smap)
    grads, info = smap.vjp(_f64(params), _f64(state), _f64(cotangents), solver)
    record(info)
    return grads


def _vjp_shapes(*args, smap: SolutionMap, solver: str, record):
    params, _, cotangents = split_args(args, smap)
    return [ShapedArray(p.shape, cotangents[0].dtype) for p in params]


def _register(prim: Primitive, host, shapes) -> None:
    """Abstract evaluation, eager implementation and jit lowering of one primitive."""
    prim.multiple_results = True
    prim.def_abstract_eval(shapes)

    def typed_host(*args, **params):
        avals = shapes(*args, **params)
        results = host(*args, **params)
        return [np.asarray(r, dtype=a.dtype).reshape(a.shape)
                for r, a in zip(results, avals, strict=True)]

    def impl(*args, **params):
        return [jnp.asarray(r) for r in typed_host(*args, **params)]

    def callback(*args, **params):
        out = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in shapes(*args, **params)]
        # "sequential" is correct for any callback; it never applies, because the
        # batching rules below remove every vmap axis before lowering.
        return jax.pure_callback(functools.partial(typed_host, **params), out, *args,
                                 vmap_method="sequential")

    prim.def_impl(impl)
    mlir.register_lowering(prim, mlir.lower_fun(callback, multiple_results=True))


_register(solve_p, _solve_host, _solve_shapes)
_register(jvp_p, _jvp_host, _jvp_shapes)
_register(vjp_p, _vjp_host, _vjp_shapes)


class _QuietOwnErrors(logging.Filter):
    """Drop JAX's log record of an exception raised by our callback under ``jit``.

    JAX logs every exception raised in a ``pure_callback`` before turning it into a
    ``JaxRuntimeError``; for our input and solver errors that log only repeats the
    message the user receives in the raised error.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConvexLayersError)


logging.getLogger("jax._src.callback").addFilter(_QuietOwnErrors())
