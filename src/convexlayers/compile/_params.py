"""Parameters: what the user passes, how it is checked, how it reaches CVXPY's program.

The user's parameter values, each flattened in column-major order and
concatenated, form the vector θ. CVXPY's parametric program is written in
*reduced* parameters: a symmetric matrix parameter becomes its upper triangle,
a diagonal one its diagonal, and with ``gp=True`` a positive parameter p
becomes log p. We trace those replacements through the reduction chain and
express the reduced parameter vector as

    θ_red = L_lin θ + L_log log θ,

with sparse L_lin, L_log. Symmetric parameters are symmetrized, (X + Xᵀ)/2,
before their triangle is taken, so that their gradient is symmetric too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import cvxpy as cp
import numpy as np
import scipy.sparse as sp
from cvxpy.reductions.cvx_attr2constr import CvxAttr2Constr
from cvxpy.reductions.dgp2dcp.dgp2dcp import Dgp2Dcp

from convexlayers._errors import ProblemError

if TYPE_CHECKING:
    from cvxpy.reductions.dcp2cone.cone_matrix_stuffing import ParamConeProg

_SIGN_ATTRS = ("nonneg", "nonpos", "pos", "neg")
_MATRIX_ATTRS = {"symmetric": "symmetric", "PSD": "psd", "NSD": "nsd", "diag": "diag"}


@dataclass(frozen=True)
class ParamSpec:
    """One user parameter as the layer sees it.

    Attributes:
        name: the parameter's name.
        shape: its shape.
        offset: position of its first entry in θ.
        domain: declared attributes to check values against: a subset of
            {nonneg, nonpos, pos, neg, symmetric, psd, nsd, diag}.
        bounds: declared (lower, upper) bounds, or None.
        logged: enters through its logarithm (``gp=True``), so values must be positive.
        position: its index among the layer's parameters (0-based).
        auto_named: it has CVXPY's automatic name ``param<id>``, not one the user gave.
    """

    name: str
    shape: tuple[int, ...]
    offset: int
    domain: frozenset[str] = frozenset()
    bounds: tuple[np.ndarray, np.ndarray] | None = field(default=None, compare=False)
    logged: bool = False
    position: int = 0
    auto_named: bool = False

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=int))

    @property
    def label(self) -> str:
        """How messages name it: ``'A'``, or ``'param3' (argument 2)`` (1-based) when the
        user gave it no name, so that CVXPY's automatic name can be matched to an argument."""
        if self.auto_named:
            return f"'{self.name}' (argument {self.position + 1})"
        return f"'{self.name}'"

    @property
    def symmetric(self) -> bool:
        return bool(self.domain & {"symmetric", "psd", "nsd"})


def _domain(p: cp.Parameter) -> frozenset[str]:
    attrs = {a for a in _SIGN_ATTRS if p.attributes[a]}
    attrs |= {name for a, name in _MATRIX_ATTRS.items() if p.attributes[a]}
    return frozenset(attrs)


def _bounds(p: cp.Parameter) -> tuple[np.ndarray, np.ndarray] | None:
    # CVXPY's attributes dict is inferred as holding the union of all its values' types.
    bounds = cast("Iterable[Any] | None", p.attributes.get("bounds"))
    if bounds is None:
        return None
    lo, hi = (np.broadcast_to(np.asarray(b, dtype=float), p.shape) for b in bounds)
    return lo.ravel(order="F"), hi.ravel(order="F")


def _symmetrizer(k: int) -> sp.csr_array:
    """(k², k²) matrix of X ↦ (X + Xᵀ)/2 on column-major vec(X)."""
    idx = np.arange(k * k)
    transposed = idx.reshape(k, k, order="F").ravel(order="C")
    rows = np.concatenate([idx, idx])
    cols = np.concatenate([idx, transposed])
    return sp.csr_array((np.full(2 * k * k, 0.5), (rows, cols)), shape=(k * k, k * k))


def _gather_of(reduction: CvxAttr2Constr, pid: int, new_id: int, shape: tuple) -> np.ndarray:
    """Indices g with reduced = full[g], read off CVXPY's own reduction."""
    size = int(np.prod(shape, dtype=int))
    probe = np.arange(size, dtype=float).reshape(shape, order="F")
    idx = np.asarray(reduction.param_forward({pid: probe})[new_id]).ravel(order="F")
    gather = np.rint(idx).astype(int)
    rand = np.random.default_rng(0).standard_normal(size)
    check = np.asarray(
        reduction.param_forward({pid: rand.reshape(shape, order="F")})[new_id]
    ).ravel(order="F")
    if not np.array_equal(gather, idx) or not np.allclose(check, rand[gather], rtol=0, atol=0):
        raise ProblemError(
            "parameters: CVXPY reduces a parameter with attributes convexlayers cannot map "
            "(not a selection of entries). Drop the attribute or report this problem."
        )
    return gather


def param_specs(parameters: Sequence[cp.Parameter], logged: set[int]) -> tuple[ParamSpec, ...]:
    """Specs of the user's parameters, in the order the layer takes them."""
    specs, offset = [], 0
    for position, p in enumerate(parameters):
        spec = ParamSpec(
            name=p.name(),
            shape=tuple(p.shape),
            offset=offset,
            domain=_domain(p),
            bounds=_bounds(p),
            logged=p.id in logged,
            position=position,
            auto_named=p.name() == f"{cp.settings.PARAM_PREFIX}{p.id}",
        )
        specs.append(spec)
        offset += spec.size
    return tuple(specs)


def logged_parameter_ids(reductions: Sequence[object]) -> set[int]:
    """Ids of the user parameters that a Dgp2Dcp reduction replaces by their logarithm."""
    return {pid for r in reductions if isinstance(r, Dgp2Dcp) for pid in r.param_id_map}


def reduced_parameter_maps(
    parameters: Sequence[cp.Parameter],
    specs: Sequence[ParamSpec],
    reductions: Sequence[object],
    param_prog: ParamConeProg,
) -> tuple[sp.csr_array, sp.csr_array | None]:
    """Sparse (L_lin, L_log) with θ_red = L_lin θ + L_log log θ.

    The rows follow CVXPY's reduced parameter vector (``param_id_to_col``,
    without the trailing constant); the columns follow θ.
    """
    total = sum(s.size for s in specs)
    # For each parameter id met along the chain: (kind, matrix from θ to its entries).
    sources: dict[int, tuple[str, sp.csr_array]] = {}
    shapes = {p.id: tuple(p.shape) for p in parameters}
    for p, spec in zip(parameters, specs, strict=True):
        select = sp.csr_array(
            (np.ones(spec.size), (np.arange(spec.size), spec.offset + np.arange(spec.size))),
            shape=(spec.size, total),
        )
        if spec.symmetric:
            select = _symmetrizer(spec.shape[0]) @ select
        sources[p.id] = ("lin", select)
    for r in reductions:
        pmap = getattr(r, "param_id_map", {})
        for old_id, new_ids in pmap.items():
            if old_id not in sources:
                continue
            kind, mat = sources[old_id]
            for new_id in new_ids:
                if isinstance(r, Dgp2Dcp) and kind == "lin":
                    sources[new_id] = ("log", mat)
                    shapes[new_id] = shapes[old_id]
                elif isinstance(r, CvxAttr2Constr):
                    gather = _gather_of(r, old_id, new_id, shapes[old_id])
                    sources[new_id] = (kind, mat[gather])
                    shapes[new_id] = (gather.size,)
                else:
                    raise ProblemError(
                        f"parameters: CVXPY's {type(r).__name__} transforms a parameter in "
                        "a way convexlayers does not support (complex parameters?)."
                    )
    return _assemble(sources, param_prog, total)


def _assemble(
    sources: dict[int, tuple[str, sp.csr_array]], param_prog: ParamConeProg, total: int
) -> tuple[sp.csr_array, sp.csr_array | None]:
    n_red = param_prog.total_param_size
    blocks: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {"lin": [], "log": []}
    for p in param_prog.parameters:
        if p.id not in sources:
            raise ProblemError(
                f"parameters: CVXPY's program uses a parameter {p.name()} that cannot be "
                "traced back to the layer's parameters."
            )
        kind, mat = sources[p.id]
        col = param_prog.param_id_to_col[p.id]
        coo = mat.tocoo()
        blocks[kind].append((coo.row + col, coo.col, coo.data))

    def build(parts: list) -> sp.csr_array:
        if not parts:
            return sp.csr_array((n_red, total))
        rows, cols, vals = (np.concatenate(x) for x in zip(*parts, strict=True))
        return sp.csr_array((vals, (rows, cols)), shape=(n_red, total))

    return build(blocks["lin"]), (build(blocks["log"]) if blocks["log"] else None)
