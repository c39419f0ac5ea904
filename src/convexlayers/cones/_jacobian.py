"""The block-diagonal Jacobian of a projection onto a product cone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from convexlayers.cones._dims import ConeDims
from convexlayers.cones._soc import soc_dense

if TYPE_CHECKING:
    import scipy.sparse as sp


def _block_indices(offset: int, count: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of ``count`` consecutive k×k diagonal blocks, C order."""
    starts = offset + k * np.arange(count)
    i, j = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    rows = (starts[:, None, None] + i[None]).ravel()
    cols = (starts[:, None, None] + j[None]).ravel()
    return rows, cols


@dataclass(frozen=True, eq=False)
class ConeJacobian:
    """Batched symmetric block-diagonal matrix D, e.g. ``DΠ_{K*}(v)`` for each batch element.

    For every batch element b, D_b is m×m and block diagonal: a diagonal part on
    the zero-cone and nonnegative rows (``diag``), and one dense symmetric block
    per SOC, PSD, exponential and power cone (``blocks``), but for runs of
    second-order cones kept in factored form (``low_rank``).

    Attributes:
        dims: the cone K whose rows D acts on.
        batch: number of batch elements B.
        diag: (B, m) diagonal entries on the zero-cone and nonnegative rows, 0 on
            rows covered by a dense block.
        blocks: one ``(row offset, (B, k, k) array)`` per dense cone, in row order.
        stacks: the same blocks grouped, ``(row offset, (B, count, k, k) array)`` for
            runs of ``count`` consecutive cones of equal size; used by :meth:`matvec`
            and :meth:`dense` to avoid a Python loop over cones. Built from
            ``blocks`` when omitted; when given it must hold the same blocks.
        low_rank: runs of second-order cones not in ``blocks``: ``(row offset, (δ, h,
            w, γ))`` with δ, h, w (B, count, k) and γ (B, count), each block
            diag(δ) + h e₀ᵀ + e₀ hᵀ + γ w wᵀ (:func:`~convexlayers.cones._soc.soc_jacobian_parts`;
            O(k) memory where a dense block takes k²).

    Example:
        >>> import numpy as np
        >>> from convexlayers.cones import ConeDims, dual_projection_jacobian
        >>> v = np.array([[-1.0, -2.0, 3.0]])
        >>> jac = dual_projection_jacobian(ConeDims(zero=1, nonneg=2), v)
        >>> jac.matvec(np.ones((1, 3))).tolist()
        [[1.0, 0.0, 1.0]]
        >>> jac.sparse(0).toarray().tolist()
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    """

    dims: ConeDims
    batch: int
    diag: np.ndarray = field(repr=False)
    blocks: tuple[tuple[int, np.ndarray], ...] = field(repr=False)
    stacks: tuple[tuple[int, np.ndarray], ...] = field(default=(), repr=False)
    low_rank: tuple[tuple[int, tuple[np.ndarray, ...]], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        m = self.dims.size
        if self.diag.shape != (self.batch, m):
            raise ValueError(
                f"`diag` must have shape (batch, m) = ({self.batch}, {m}), got {self.diag.shape}."
            )
        for offset, block in self.blocks:
            k = block.shape[-1]
            if block.shape != (self.batch, k, k) or not 0 <= offset <= m - k:
                raise ValueError(
                    f"each block must be (offset, array of shape ({self.batch}, k, k)) inside "
                    f"the {m} rows; got offset {offset} and shape {block.shape}."
                )
        for offset, parts in self.low_rank:
            shape = np.shape(parts[0]) if len(parts) == 4 else ()
            if (len(shape) != 3 or shape[0] != self.batch
                    or any(np.shape(p) != shape for p in parts[:3])
                    or np.shape(parts[3]) != shape[:2]
                    or not 0 <= offset <= m - shape[1] * shape[2]):
                raise ValueError(
                    f"each low_rank run must be (offset, (δ, h, w, γ)) with δ, h, w of "
                    f"shape ({self.batch}, count, k) and γ ({self.batch}, count), inside the "
                    f"{m} rows; got offset {offset} and shapes {[np.shape(p) for p in parts]}."
                )
        if not self.stacks:
            stacks = tuple((offset, block[:, None]) for offset, block in self.blocks)
            object.__setattr__(self, "stacks", stacks)

    def matvec(self, z: np.ndarray) -> np.ndarray:
        """Apply D to each batch element: ``(D z)_b = D_b z_b``.

        Args:
            z: (B, m) array, or (B, m, r) for r right-hand sides at once.

        Returns:
            Array of the same shape as z.
        """
        z = np.asarray(z, dtype=np.float64)
        if z.ndim not in (2, 3) or z.shape[:2] != (self.batch, self.dims.size):
            raise ValueError(
                f"`z` must have shape ({self.batch}, {self.dims.size}) or "
                f"({self.batch}, {self.dims.size}, r), got {z.shape}."
            )
        zz = z if z.ndim == 3 else z[:, :, None]
        out = self.diag[:, :, None] * zz
        rhs = zz.shape[2]
        for offset, stack in self.stacks:
            count, k = stack.shape[1], stack.shape[2]
            sl = slice(offset, offset + count * k)
            part = zz[:, sl].reshape(self.batch, count, k, rhs)
            out[:, sl] = (stack @ part).reshape(self.batch, count * k, rhs)
        for offset, (delta, head, w, gamma) in self.low_rank:
            count, k = delta.shape[1], delta.shape[2]
            sl = slice(offset, offset + count * k)
            part = zz[:, sl].reshape(self.batch, count, k, rhs)
            prod = delta[..., None] * part + head[..., None] * part[:, :, :1]
            prod[:, :, 0] += (head[..., None] * part).sum(axis=2)
            prod += (gamma[..., None] * w)[..., None] * (w[..., None] * part).sum(
                axis=2, keepdims=True)
            out[:, sl] = prod.reshape(self.batch, count * k, rhs)
        return out if z.ndim == 3 else out[:, :, 0]

    def _dense_runs(self, rows: slice = slice(None)) -> list[tuple[int, np.ndarray]]:
        """Every run as (offset, (b, count, k, k)) for the batch ``rows``, the factored
        ones formed."""
        return [*((offset, stack[rows]) for offset, stack in self.stacks),
                *((offset, soc_dense(*(p[rows] for p in parts)))
                  for offset, parts in self.low_rank)]

    def dense(self) -> np.ndarray:
        """Return D as a dense (B, m, m) array."""
        m = self.dims.size
        out = np.zeros((self.batch, m, m))
        idx = np.arange(m)
        out[:, idx, idx] = self.diag
        for offset, stack in self._dense_runs():
            rows, cols = _block_indices(offset, stack.shape[1], stack.shape[2])
            out[:, rows, cols] = stack.reshape(self.batch, rows.size)
        return out

    def sparse(self, i: int) -> sp.csr_array:
        """Return D of batch element i as a SciPy CSR array (m, m).

        The sparsity structure is the same for every batch element (the diagonal of
        the zero-cone and nonnegative rows and every dense block, explicit zeros
        kept), so a symbolic factorization can be reused across the batch.

        Args:
            i: batch index, ``-batch <= i < batch``.

        Returns:
            ``scipy.sparse.csr_array`` of shape (m, m).
        """
        import scipy.sparse as sp  # deferred: only this method needs SciPy

        if not -self.batch <= i < self.batch:
            raise IndexError(f"batch index {i} out of range for batch of size {self.batch}.")
        m = self.dims.size
        lin = np.arange(self.dims.zero + self.dims.nonneg)
        rows, cols, vals = [lin], [lin], [self.diag[i, lin]]
        for offset, stack in self._dense_runs(slice(i, i + 1 if i != -1 else None)):
            r, c = _block_indices(offset, stack.shape[1], stack.shape[2])
            rows.append(r)
            cols.append(c)
            vals.append(stack[0].ravel())
        coo = sp.coo_array(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m, m)
        )
        return coo.tocsr()
