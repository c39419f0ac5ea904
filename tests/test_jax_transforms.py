"""JAX layer under transformations: jit, vmap, grad, jvp, jacfwd, jacrev, and compositions.

Every transformed result is compared with the eager result on the same values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from convexlayers.jax import CvxpyLayer
from zoo import CASES

jax.config.update("jax_enable_x64", True)

TOL = {"rtol": 1e-9, "atol": 1e-10}


def _make(case, **kwargs):
    return CvxpyLayer(case.problem, case.parameters, case.variables, gp=case.gp, **kwargs)


def _batch(case, seed: int, size: int) -> list[jax.Array]:
    rng = np.random.default_rng(seed)
    draws = [case.draw(rng) for _ in range(size)]
    return [jnp.asarray(np.stack(vs)) for vs in zip(*draws, strict=True)]


def _close(actual, expected, **tol):
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, **(tol or TOL))


def _loss(layer):
    def loss(*ps):
        return sum(jnp.sum(jnp.sin(o)) for o in layer(*ps))

    return loss


@pytest.mark.parametrize("name", list(CASES))
def test_jit_and_vmap_agree_with_batched_call(name):
    case = CASES[name]()
    layer = _make(case)
    batch = _batch(case, 0, 3)
    eager = layer(*batch)
    _close(jax.jit(layer)(*batch), eager)
    _close(jax.vmap(layer)(*batch), eager)
    _close(jax.jit(jax.vmap(layer))(*batch), eager)
    _close(layer(*[v[1] for v in batch]), [o[1] for o in eager])


@pytest.mark.parametrize("name", list(CASES))
def test_grad_jit_vmap_compositions(name):
    case = CASES[name]()
    layer = _make(case)
    batch = _batch(case, 1, 2)
    argnums = tuple(range(len(batch)))
    grad = jax.grad(_loss(layer), argnums=argnums)
    first = [v[0] for v in batch]
    eager = grad(*first)
    _close(jax.grad(jax.jit(_loss(layer)), argnums=argnums)(*first), eager)
    _close(jax.jit(grad)(*first), eager)
    per_element = jax.jit(jax.vmap(grad))(*batch)
    _close([g[0] for g in per_element], eager)
    # the gradient of a batched call's summed loss is the per-element gradient
    _close(grad(*batch), per_element)


@pytest.mark.parametrize("name", list(CASES))
def test_jacfwd_jacrev_jvp_agree(name):
    case = CASES[name]()
    layer = _make(case)
    values = [jnp.asarray(v) for v in case.draw(np.random.default_rng(2))]
    argnums = tuple(range(len(values)))
    fwd = jax.jit(jax.jacfwd(layer, argnums=argnums))(*values)
    rev = jax.jit(jax.jacrev(layer, argnums=argnums))(*values)
    _close(fwd, rev, rtol=1e-8, atol=1e-9)
    tangents = [np.asarray(t) for t in case.draw(np.random.default_rng(3))]
    _, jvp = jax.jvp(layer, values, [jnp.asarray(t) for t in tangents])
    expected = [sum(np.tensordot(j, t, axes=t.ndim) for j, t in zip(row, tangents, strict=True))
                for row in fwd]
    _close(jvp, expected, rtol=1e-8, atol=1e-9)
    _, lin = jax.linearize(layer, *values)
    _close(lin(*tangents), jvp)


def test_vmap_over_already_batched_values():
    case = CASES["socp"]()
    layer = _make(case)
    flat = _batch(case, 4, 6)
    nested = [v.reshape((2, 3, *v.shape[1:])) for v in flat]
    expected = [o.reshape((2, 3, *o.shape[1:])) for o in layer(*flat)]
    _close(jax.vmap(layer)(*nested), expected)
    _close(jax.jit(jax.vmap(jax.vmap(layer)))(*nested), expected)
    swapped = [jnp.swapaxes(v, 0, 1) for v in nested]  # vmap axis not leading
    out = jax.vmap(layer, in_axes=1, out_axes=1)(*swapped)
    _close(out, [jnp.swapaxes(o, 0, 1) for o in expected])


def test_vmap_mixes_mapped_unmapped_batched_and_unbatched():
    case = CASES["least_squares"]()
    layer = _make(case)
    A = _batch(case, 5, 4)[0]   # mapped over 4, each call unbatched in A
    b = _batch(case, 6, 3)[1]   # not mapped, but a batch of 3 inside each call
    out, = jax.jit(jax.vmap(layer, in_axes=(0, None)))(A, b)
    assert out.shape == (4, 3, 3)
    for i in range(4):
        _close(out[i], layer(A[i], b)[0])

    def loss(A, b):
        return jnp.sum(jnp.sin(jax.vmap(layer, in_axes=(0, None))(A, b)[0]))

    gA, gb = jax.jit(jax.grad(loss, argnums=(0, 1)))(A, b)
    parts = [jax.grad(lambda a, b: jnp.sum(jnp.sin(layer(a, b)[0])), argnums=(0, 1))(A[i], b)
             for i in range(4)]
    _close(gA, jnp.stack([p[0] for p in parts]))
    _close(gb, sum(p[1] for p in parts), rtol=1e-9, atol=1e-9)


def test_mixed_batched_and_unbatched_call_under_jacrev():
    case = CASES["lp"]()
    layer = _make(case)
    c = _batch(case, 7, 3)[0]
    _, G, h = (jnp.asarray(v) for v in case.draw(np.random.default_rng(8)))
    jac = jax.jacrev(lambda c, h: layer(c, G, h)[0], argnums=(0, 1))(c, h)
    assert jac[0].shape == (3, 4, 3, 4) and jac[1].shape == (3, 4, 3)
    for i in range(3):
        ji = jax.jacfwd(lambda c, h, i=i: layer(c, G, h)[0], argnums=(0, 1))(c[i], h)
        _close(jac[0][i, :, i], ji[0], rtol=1e-8, atol=1e-9)
        _close(jac[1][i], ji[1], rtol=1e-8, atol=1e-9)


def test_vmap_of_duals_and_gp():
    for name in ("qp_param_P", "gp"):
        case = CASES[name]()
        layer = _make(case)
        batch = _batch(case, 9, 2)
        _close(jax.vmap(layer)(*batch), layer(*batch))


def test_checkpoint_scan_and_eval_shape():
    case = CASES["least_squares"]()
    layer = _make(case)
    A, b = (jnp.asarray(v) for v in case.draw(np.random.default_rng(11)))
    loss = _loss(layer)
    _close(jax.grad(jax.checkpoint(loss))(A, b), jax.grad(loss)(A, b))

    def step(A, _):
        return A - 0.1 * jax.grad(loss)(A, b), loss(A, b)

    _, losses = jax.jit(lambda A: jax.lax.scan(step, A, None, length=2))(A)
    _close(losses[0], loss(A, b))
    shape, = jax.eval_shape(layer, A, jnp.ones((7, 6)))
    assert shape.shape == (7, 3) and shape.dtype == jnp.float64


def test_second_order_says_it_is_not_supported():
    case = CASES["least_squares"]()
    layer = _make(case)
    A, b = (jnp.asarray(v) for v in case.draw(np.random.default_rng(10)))
    loss = _loss(layer)
    with pytest.raises(NotImplementedError, match="first order only"):
        jax.hessian(loss, argnums=1)(A, b)
    with pytest.raises(NotImplementedError, match="first order only"):
        jax.grad(lambda b: jnp.sum(jax.grad(loss, argnums=1)(A, b)))(b)
