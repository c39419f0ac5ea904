"""JAX layer: bad input beyond the shared table (tests/bad_inputs.py, run by
test_bad_inputs_jax.py): under ``grad`` and ``vmap``, and ``solver_args`` traced by ``jit``.

Errors that need the values (NaN, domains, infeasibility) happen when the solve runs.
Eagerly they keep their type; under ``jit`` JAX turns an exception raised in a host
callback into a ``JaxRuntimeError`` (a plain ``ValueError`` once the compiled function has
run successfully before), whose text must still carry the original message.
"""

from __future__ import annotations

import cvxpy as cp
import jax
import jax.numpy as jnp
import pytest

from convexlayers import ParameterError, SolverArgumentError
from convexlayers.jax import CvxpyLayer
from zoo import interval, readme_problem

jax.config.update("jax_enable_x64", True)


@pytest.fixture
def layer():
    prob, A, b, x = readme_problem()
    return CvxpyLayer(prob, [A, b], [x])


def _run(f, *args):
    return jax.block_until_ready(f(*args))


# -- trace time: raised while tracing, before anything runs ------------------------------
@pytest.mark.parametrize("wrap", [lambda f: f, jax.jit, jax.grad], ids=["eager", "jit", "grad"])
def test_shape_count_and_batch_errors_at_trace_time(layer, wrap):
    def call(*ps):
        return jnp.sum(layer(*ps)[0])

    with pytest.raises(ParameterError, match=r"takes 2 parameter values \(A, b"):
        _run(wrap(call), jnp.ones((3, 2)))
    with pytest.raises(ParameterError, match=r"'A': expected shape \(3, 2\).*received \(2, 3\)"):
        _run(wrap(call), jnp.ones((2, 3)), jnp.ones(3))
    with pytest.raises(ParameterError, match=r"batch sizes disagree.*'A' has 4.*'b' has 5"):
        _run(wrap(call), jnp.ones((4, 3, 2)), jnp.ones((5, 3)))


def test_errors_under_vmap_are_raised_while_tracing(layer):
    with pytest.raises(ParameterError, match=r"'b': expected shape \(3,\)"):
        jax.vmap(layer)(jnp.ones((4, 3, 2)), jnp.ones((4, 2)))
    with pytest.raises(ParameterError, match="batch sizes disagree"):
        jax.vmap(layer)(jnp.ones((4, 2, 3, 2)), jnp.ones((4, 5, 3)))


def test_traced_solver_args_say_to_close_over_them(layer):
    with pytest.raises(SolverArgumentError, match=r"static settings.*close over"):
        jax.jit(layer)(jnp.ones((3, 2)), jnp.ones(3), solver_args={"eps": 1e-8})


# -- run time ----------------------------------------------------------------------------
def test_nan_under_jit_and_grad_carries_the_message(layer):
    b = jnp.ones((2, 3)).at[1, 0].set(jnp.nan)
    msg = r"ParameterError: parameter 'b': contains NaN or Inf in batch elements \[1\]"
    with pytest.raises(jax.errors.JaxRuntimeError, match=msg):
        _run(jax.jit(layer), jnp.ones((3, 2)), b)
    loss = jax.jit(jax.grad(lambda A, b: jnp.sum(layer(A, b)[0])))
    with pytest.raises(jax.errors.JaxRuntimeError, match=msg):
        _run(loss, jnp.ones((3, 2)), b)


def test_domain_psd_under_vmap():
    x = cp.Variable(2)
    P = cp.Parameter((2, 2), PSD=True, name="P")
    prob = cp.Problem(cp.Minimize(cp.quad_form(x, P)), [cp.sum(x) == 1])
    layer = CvxpyLayer(prob, [P], [x])
    mats = jnp.stack([jnp.eye(2), jnp.diag(jnp.array([1.0, -1.0]))])
    with pytest.raises(ParameterError, match=r"'P': declared positive semidefinite.*\[1\]"):
        jax.vmap(layer)(mats)


def test_infeasible_under_jit_and_vmap_carries_the_message():
    layer = CvxpyLayer(*interval())
    lo, hi = jnp.array([0.0, 2.0, 0.0, 5.0]), jnp.ones(4)
    msg = (r"SolverError: (CLARABEL|NATIVE) found no solution for batch elements "
           r"\[1: infeasible, 3: inf")
    with pytest.raises(jax.errors.JaxRuntimeError, match=msg):
        _run(jax.jit(layer), lo, hi)
    with pytest.raises(jax.errors.JaxRuntimeError, match=msg):
        _run(jax.jit(jax.vmap(layer, in_axes=(0, None))), lo, 1.0)
