"""Projections onto the product cone K (and K*) and the Jacobian of Π_{K*}.

K is the product, in row order, of the zero cone, the nonnegative orthant,
second-order cones, PSD cones (svec), exponential cones and power cones (see
:mod:`convexlayers.cones._dims`). Its dual K* has the free cone in place of the
zero cone, is identical on the self-dual blocks, and uses the dual exponential
and power cones, projected by Moreau's decomposition

    Π_{K*}(v) = v + Π_K(-v),      DΠ_{K*}(v) = I - DΠ_K(-v).

The derivative engine differentiates through ``y = Π_{K*}(v)``, so the Jacobian
is provided for the dual projection: a :class:`ConeJacobian`, block diagonal
and symmetric with eigenvalues in [0, 1].

Consecutive cones of the same kind and size are projected in one vectorized
call over a stack of ``batch · count`` cones.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from convexlayers.cones._dims import ConeDims, svec_size
from convexlayers.cones._exp import exp_projection_jacobian, project_exp
from convexlayers.cones._jacobian import ConeJacobian
from convexlayers.cones._power import power_projection_jacobian, project_power
from convexlayers.cones._psd import order_from_size, project_psd, psd_projection_jacobian
from convexlayers.cones._soc import project_soc, soc_jacobian_parts, soc_projection_jacobian

# A group: (kind, row offset, cone size, number of cones, power exponents or None).
_Group = tuple[str, int, int, int, np.ndarray | None]


def _groups(dims: ConeDims) -> Iterator[_Group]:
    """Runs of consecutive cones of the same kind and size (power: any exponents)."""
    offset = dims.soc_start
    for kind, sizes in (("soc", dims.soc), ("psd", tuple(svec_size(k) for k in dims.psd))):
        i = 0
        while i < len(sizes):
            j = i
            while j < len(sizes) and sizes[j] == sizes[i]:
                j += 1
            yield kind, offset, sizes[i], j - i, None
            offset += sizes[i] * (j - i)
            i = j
    if dims.exp:
        yield "exp", dims.exp_start, 3, dims.exp, None
    if dims.power:
        yield "power", dims.power_start, 3, len(dims.power), np.asarray(dims.power)


def _check_batch(dims: ConeDims, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate v (B, m); return a finite copy and the mask of non-finite batch rows."""
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != dims.size:
        raise ValueError(
            f"`v` must have shape (batch, {dims.size}) for cone {dims}, got shape {arr.shape}; "
            "reshape a single vector to (1, m)."
        )
    bad = ~np.all(np.isfinite(arr), axis=1)
    if np.any(bad):
        arr = np.where(bad[:, None], 0.0, arr)
    return arr, bad


def _stack(v: np.ndarray, offset: int, size: int, count: int) -> np.ndarray:
    """Rows of a group as a (batch * count, size) stack, batch-major."""
    return v[:, offset : offset + size * count].reshape(-1, size)


def _group_projection(kind: str, stack: np.ndarray, size: int, alphas, dual: bool):
    """(N, k) projections onto K (or K*) for a stack of same-kind cones."""
    if kind == "soc":
        return project_soc(stack)
    if kind == "psd":
        return project_psd(stack, order_from_size(size))

    def primal(w: np.ndarray) -> np.ndarray:
        return project_exp(w) if kind == "exp" else project_power(w, alphas)

    # Moreau: Π_{K*}(w) = w + Π_K(-w) for the cones that are not self-dual.
    return stack + primal(-stack) if dual else primal(stack)


def _apply_groups(dims: ConeDims, v: np.ndarray, out: np.ndarray, dual: bool) -> None:
    """Write the projection of each conic group of v into out (in place)."""
    batch = v.shape[0]
    for kind, offset, size, count, alpha in _groups(dims):
        alphas = None if alpha is None else np.tile(alpha, batch)
        proj = _group_projection(kind, _stack(v, offset, size, count), size, alphas, dual)
        out[:, offset : offset + size * count] = proj.reshape(batch, size * count)


def _project(dims: ConeDims, v: np.ndarray, dual: bool) -> np.ndarray:
    arr, bad = _check_batch(dims, v)
    out = np.empty_like(arr)
    nz, nn = dims.zero, dims.nonneg
    out[:, :nz] = arr[:, :nz] if dual else 0.0
    out[:, nz : nz + nn] = np.maximum(arr[:, nz : nz + nn], 0.0)
    _apply_groups(dims, arr, out, dual)
    out[bad] = np.nan
    return out


def project_primal(dims: ConeDims, v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto K, row by row of a batch.

    Args:
        dims: the cone K.
        v: (B, m) array, m = dims.size.

    Returns:
        (B, m) array Π_K(v). Batch rows containing NaN or Inf give all-NaN rows.

    Raises:
        ValueError: if v does not have shape (B, dims.size).
    """
    return _project(dims, v, dual=False)


def project_dual(dims: ConeDims, v: np.ndarray) -> np.ndarray:
    """Euclidean projection onto the dual cone K*, row by row of a batch.

    Args:
        dims: the cone K (the zero cone's dual is the free cone).
        v: (B, m) array, m = dims.size.

    Returns:
        (B, m) array Π_{K*}(v). Batch rows containing NaN or Inf give all-NaN rows.

    Raises:
        ValueError: if v does not have shape (B, dims.size).

    Example:
        >>> import numpy as np
        >>> project_dual(ConeDims(zero=1, nonneg=2), np.array([[-1.0, -2.0, 3.0]])).tolist()
        [[-1.0, 0.0, 3.0]]
    """
    return _project(dims, v, dual=True)


def _group_jacobian(kind: str, stack: np.ndarray, size: int, alphas: np.ndarray | None):
    """(N, k, k) Jacobians of the dual projection for a stack of same-kind cones."""
    if kind == "soc":
        return soc_projection_jacobian(stack)
    if kind == "psd":
        return psd_projection_jacobian(stack, order_from_size(size))
    # Moreau: DΠ_{K*}(w) = I - DΠ_K(-w).
    if kind == "exp":
        primal = exp_projection_jacobian(-stack)
    else:
        primal = power_projection_jacobian(-stack, alphas)
    return np.eye(3) - primal


def dual_projection_jacobian(dims: ConeDims, v: np.ndarray,
                             low_rank_from: int | None = None) -> ConeJacobian:
    """Jacobian D = DΠ_{K*}(v) of the dual-cone projection, for each batch element.

    Zero-cone rows (K* free): 1. Nonnegative rows: 1 where v > 0, else 0.
    SOC and PSD blocks: the Jacobian of their (self-dual) projections. Exponential
    and power blocks: ``I - DΠ_K(-v)``. Where the projection is not differentiable
    an element of the generalized Jacobian is returned. Every block is symmetric
    with eigenvalues in [0, 1].

    Args:
        dims: the cone K.
        v: (B, m) array, m = dims.size.
        low_rank_from: second-order cones of at least this many rows come in factored
            form (``ConeJacobian.low_rank``) instead of as dense blocks.

    Returns:
        A :class:`ConeJacobian`. Batch rows of v with NaN or Inf give NaN entries.

    Raises:
        ValueError: if v does not have shape (B, dims.size).
    """
    arr, bad = _check_batch(dims, v)
    batch = arr.shape[0]
    nz, nn = dims.zero, dims.nonneg
    diag = np.zeros_like(arr)
    diag[:, :nz] = 1.0
    diag[:, nz : nz + nn] = arr[:, nz : nz + nn] > 0
    diag[bad] = np.nan
    stacks: list[tuple[int, np.ndarray]] = []
    blocks: list[tuple[int, np.ndarray]] = []
    low_rank: list[tuple[int, tuple[np.ndarray, ...]]] = []
    for kind, offset, size, count, alpha in _groups(dims):
        if kind == "soc" and low_rank_from is not None and size >= low_rank_from:
            low_rank.append((offset, _soc_parts(arr, offset, size, count, bad)))
            continue
        alphas = None if alpha is None else np.tile(alpha, batch)
        jac = _group_jacobian(kind, _stack(arr, offset, size, count), size, alphas)
        jac = jac.reshape(batch, count, size, size)
        jac[bad] = np.nan
        jac.setflags(write=False)
        stacks.append((offset, jac))
        blocks.extend((offset + j * size, jac[:, j]) for j in range(count))
    diag.setflags(write=False)
    return ConeJacobian(dims, batch, diag, tuple(blocks), tuple(stacks), tuple(low_rank))


def _soc_parts(arr, offset, size, count, bad) -> tuple[np.ndarray, ...]:
    """(δ, h, w (B, count, k), γ (B, count)) of a run of second-order cones."""
    batch = arr.shape[0]
    parts = soc_jacobian_parts(_stack(arr, offset, size, count))
    out = tuple(p.reshape(batch, count, *p.shape[1:]) for p in parts)
    for p in out:
        p[bad] = np.nan
        p.setflags(write=False)
    return out
