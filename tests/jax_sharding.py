"""The JAX layer with a batch sharded over two devices (run by tests/test_distributed.py).

Run in a fresh interpreter with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
(the flag must be set before jax is imported). Trains nothing: it evaluates one loss and
its gradient with respect to the weights of a linear model that produces the parameters
of a QP with inequality constraints, three ways: unsharded, ``jax.jit`` with the batch
sharded over a two-device mesh, and ``jax.shard_map`` over the same mesh (with and
without ``check_vma``); it prints the differences from the unsharded run as one line of
JSON.
"""

from __future__ import annotations

import json
import traceback

import cvxpy as cp
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from convexlayers._core import SolutionMap
from convexlayers.jax import CvxpyLayer

jax.config.update("jax_enable_x64", True)
N_VAR, N_INEQ, N_FEAT, BATCH = 4, 6, 5, 8
CALLS: list[tuple[str, int]] = []


def count_host_calls() -> None:
    """Record the batch size of every solve and VJP that reaches the host."""
    for name in ("solve", "vjp"):
        original = getattr(SolutionMap, name)

        def counted(self, params, *args, _name=name, _original=original, **kwargs):
            CALLS.append((_name, int(np.shape(params[0])[0])))
            return _original(self, params, *args, **kwargs)

        setattr(SolutionMap, name, counted)


def build():
    rng = np.random.default_rng(7)
    x, q, h = cp.Variable(N_VAR), cp.Parameter(N_VAR), cp.Parameter(N_INEQ)
    G = rng.standard_normal((N_INEQ, N_VAR))
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x) + q @ x), [G @ x <= h])
    layer = CvxpyLayer(problem, parameters=[q, h], variables=[x])
    weights = {"Wq": jnp.asarray(rng.standard_normal((N_FEAT, N_VAR))),
               "Wh": jnp.asarray(rng.standard_normal((N_FEAT, N_INEQ)))}
    X = jnp.asarray(rng.standard_normal((BATCH, N_FEAT)))
    Y = jnp.asarray(rng.standard_normal((BATCH, N_VAR)))

    def loss_sum(w, X, Y):
        (sol,) = layer(X @ w["Wq"], 0.1 + jax.nn.softplus(X @ w["Wh"]))
        return jnp.sum((sol - Y) ** 2)

    return loss_sum, weights, X, Y


def compare(f, args, reference) -> dict:
    CALLS.clear()
    try:
        value, grad = jax.block_until_ready(f(*args))
    except Exception as err:  # reported, not raised: the test decides
        return {"error": "".join(traceback.format_exception_only(err)).strip()}
    return {"value": abs(float(value - reference[0])),
            "grad": max(float(jnp.max(jnp.abs(grad[k] - reference[1][k]))) for k in grad),
            "host calls": list(CALLS)}


def main() -> dict:
    count_host_calls()
    loss_sum, weights, X, Y = build()

    def loss(w, X, Y):
        return loss_sum(w, X, Y) / BATCH

    reference = jax.block_until_ready(jax.jit(jax.value_and_grad(loss))(weights, X, Y))
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    rows, replicated = NamedSharding(mesh, P("batch")), NamedSharding(mesh, P())
    sharded = (jax.device_put(weights, replicated), jax.device_put(X, rows),
               jax.device_put(Y, rows))
    results = {
        "devices": len(jax.devices()), "batch": BATCH,
        "input shards": [s.data.shape[0] for s in sharded[1].addressable_shards],
        "grad scale": max(float(jnp.max(jnp.abs(g))) for g in reference[1].values()),
        "jit sharded": compare(jax.jit(jax.value_and_grad(loss)), sharded, reference),
    }
    for key, check_vma in (("shard_map", False), ("shard_map check_vma", True)):
        if not hasattr(jax, "shard_map"):  # jax < 0.7: jax.experimental.shard_map
            results[key] = {"skipped": f"no jax.shard_map in jax {jax.__version__}"}
            continue
        per_device = jax.shard_map(
            lambda w, X, Y: jax.lax.psum(loss_sum(w, X, Y), "batch") / BATCH, mesh=mesh,
            in_specs=(P(), P("batch"), P("batch")), out_specs=P(), check_vma=check_vma)
        results[key] = compare(jax.jit(jax.value_and_grad(per_device)), sharded, reference)
    return results


if __name__ == "__main__":
    print(json.dumps(main()))
