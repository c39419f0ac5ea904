"""From a cone-program solution (x, y) to the user's variables and constraint duals.

The map back through CVXPY's reduction chain is linear in (x, y) (for
``gp=True``, the primal variables are the exponential of a linear map). Rather
than re-implementing each reduction's inverse, we let CVXPY's own chain invert
three probe solutions and read off the map: every output entry is one entry of
z = (x, y) times a constant (a sign, √2 for svec, ...). A third, independent
probe verifies this; where it fails we fall back to probing column by column.
The result is one sparse matrix R, applied to the whole batch at once, so the
outputs agree with what ``problem.solve()`` reports by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cvxpy.settings as cps
import numpy as np
import scipy.sparse as sp
from cvxpy.reductions.solution import Solution

from convexlayers._errors import ProblemError
from convexlayers.compile._canon import Canonicalized
from convexlayers.compile._checks import OutputRef

_MAX_COLUMN_PROBES = 20_000


@dataclass(frozen=True)
class OutputSpec:
    """One output of the layer.

    Attributes:
        name: the variable's name.
        shape: its shape.
        is_dual: a constraint's dual variable rather than a primal variable.
        offset: position of its first entry in the stacked output vector.
        exp: the entries are exp(R z) rather than R z (primal variables with gp=True).
    """

    name: str
    shape: tuple[int, ...]
    is_dual: bool
    offset: int
    exp: bool = False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int))


def _evaluator(canon: Canonicalized, refs: Sequence[OutputRef], gp: bool) -> Callable:
    """z = (x, y) ↦ stacked outputs, through CVXPY's inverse chain (gp: log of primal)."""
    prog = canon.param_prog
    n = prog.x.size
    ids = [c.id for c in prog.constraints]
    # Split points between the constraints' blocks of y. With no constraints there is no
    # block at all (np.split would still return one empty piece).
    cuts = np.cumsum([c.size for c in prog.constraints])[:-1]

    def read(ref: OutputRef, sol: Solution) -> np.ndarray:
        if not ref.is_dual:
            if ref.leaf.id not in sol.primal_vars:
                raise ProblemError(f"variables: CVXPY returns no value for {ref.leaf.name()}.")
            value = np.asarray(sol.primal_vars[ref.leaf.id], dtype=float)
            return np.log(value) if gp else value
        if ref.constraint.id not in sol.dual_vars:
            raise ProblemError(
                f"variables: CVXPY returns no dual value for the constraint `{ref.constraint}`."
            )
        ref.constraint.save_dual_value(sol.dual_vars[ref.constraint.id])
        return np.asarray(ref.constraint.dual_variables[ref.index].value, dtype=float)

    def evaluate(z: np.ndarray) -> np.ndarray:
        duals = dict(zip(ids, np.split(z[n:], cuts), strict=True)) if ids else {}
        sol = Solution(cps.OPTIMAL, 0.0, {prog.x.id: z[:n].copy()}, duals, {})
        for reduction, inverse in zip(
            reversed(canon.reductions), reversed(canon.inverse_data), strict=True
        ):
            sol = reduction.invert(sol, inverse)
        return np.concatenate([np.ravel(read(ref, sol), order="F") for ref in refs])

    return evaluate


def _scaled_gather(evaluate: Callable, size: int) -> sp.csr_array | None:
    """R if every output is c_k z[idx_k]; None if a probe contradicts that."""
    if size == 0:
        return sp.csr_array((evaluate(np.zeros(0)).size, 0))
    rng = np.random.default_rng(0)
    u = rng.uniform(1.0, 2.0, size)
    o1, o2, o3 = evaluate(u), evaluate(u * u), evaluate(w := rng.standard_normal(size))
    nz = np.flatnonzero(o1)
    ratio = o2[nz] / o1[nz]
    order = np.argsort(u)
    pos = np.searchsorted(u[order], ratio)
    below, above = order[np.maximum(pos - 1, 0)], order[np.minimum(pos, size - 1)]
    idx = np.where(np.abs(u[below] - ratio) < np.abs(u[above] - ratio), below, above)
    coef = o1[nz] / u[idx]
    predicted = np.zeros_like(o3)
    predicted[nz] = coef * w[idx]
    if not np.allclose(o3, predicted, rtol=1e-10, atol=1e-12):
        return None
    return sp.csr_array((coef, (nz, idx)), shape=(o1.size, size))


def _column_probes(evaluate: Callable, size: int) -> sp.csr_array:
    if size > _MAX_COLUMN_PROBES:
        raise ProblemError(
            "variables: cannot map the solver's solution back to the requested outputs for a "
            f"problem of this size ({size} unknowns). Request fewer dual variables."
        )
    basis = np.eye(size)
    return sp.csr_array(np.column_stack([evaluate(e) for e in basis]))


def build_retrieval(
    canon: Canonicalized, refs: Sequence[OutputRef], gp: bool
) -> tuple[tuple[OutputSpec, ...], sp.csr_array]:
    """Output specs and the sparse map R with outputs = R (x, y) (gp: exp on primal)."""
    specs, offset = [], 0
    for ref in refs:
        spec = OutputSpec(
            name=ref.leaf.name(),
            shape=tuple(ref.leaf.shape),
            is_dual=ref.is_dual,
            offset=offset,
            exp=gp and not ref.is_dual,
        )
        specs.append(spec)
        offset += spec.size
    constraints = {id(ref.constraint): ref.constraint for ref in refs if ref.is_dual}
    saved = {k: [dv.value for dv in c.dual_variables] for k, c in constraints.items()}
    size = canon.param_prog.x.size + canon.param_prog.constr_size
    evaluate = _evaluator(canon, refs, gp)
    try:
        R = _scaled_gather(evaluate, size)
        if R is None:
            R = _column_probes(evaluate, size)
    finally:
        # Put back exactly what was there, unvalidated: after problem.solve() CVXPY stores
        # a scalar constraint's dual with shape (1,), which the `value` setter rejects.
        for k, c in constraints.items():
            for dv, value in zip(c.dual_variables, saved[k], strict=True):
                dv.save_value(value)
    return tuple(specs), R
