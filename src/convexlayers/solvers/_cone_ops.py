"""The cones of the batched interior-point method: nonnegative orthant, second-order, PSD.

Vectors are (B, l): the nonnegative rows first, then the second-order cones in CVXPY's
row order, each ``(t, u)`` meaning ``t ≥ ‖u‖``, then the PSD cones (svec rows; their
operations are in :mod:`._psd_ops`). The cones are symmetric, so the method
uses the Nesterov–Todd scaling of Vandenberghe's CVXOPT ("The CVXOPT linear and quadratic
cone program solvers", 2010): a block-diagonal symmetric W with ``W z = W⁻ᵀ s = λ``. On
the orthant W = diag(√(s/z)); on a second-order cone W² = η² (2 w̄ w̄ᵀ − J) with
J = diag(1, −I), w̄ the normalized scaling point and η = ((sᵀJs)/(zᵀJz))^¼. Jordan products are
elementwise on the orthant and ``u ∘ v = (uᵀv, u₀ v₁ + v₀ u₁)`` on a second-order cone.
Second-order cones of the same size are handled together as one (B, count, size) array,
and PSD cones of one order as one (B, count, k(k+1)/2) array. On a PSD cone W is not
symmetric (W⁻ᵀ ≠ W⁻¹); on the others it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from convexlayers.cones._dims import svec_size
from convexlayers.solvers import _psd_ops as psd


@dataclass(frozen=True)
class Cones:
    """``nonneg`` orthant rows, then second-order cones of sizes ``soc``, then PSD cones
    of orders ``psd``. ``groups`` and ``psd_groups``: (size or order, rows (count, q))."""

    nonneg: int
    soc: tuple[int, ...] = ()
    psd: tuple[int, ...] = ()
    groups: tuple[tuple[int, np.ndarray], ...] = field(init=False, repr=False, compare=False)
    psd_groups: tuple[tuple[int, np.ndarray], ...] = field(init=False, repr=False,
                                                             compare=False)

    def __post_init__(self) -> None:
        widths = [svec_size(k) for k in self.psd]
        object.__setattr__(self, "groups", _grouped(self.nonneg, self.soc, self.soc))
        object.__setattr__(self, "psd_groups", _grouped(self.nonneg + sum(self.soc),
                                                        self.psd, widths))

    @property
    def degree(self) -> int:
        return self.nonneg + len(self.soc) + sum(self.psd)

    @property
    def size(self) -> int:
        return self.nonneg + sum(self.soc) + sum(svec_size(k) for k in self.psd)

    def identity(self) -> np.ndarray:
        """e: ones on the orthant, (1, 0, …, 0) on each second-order cone, svec(I) on
        each PSD cone."""
        e = np.zeros(self.size)
        e[: self.nonneg] = 1.0
        for _, rows in self.groups:
            e[rows[:, 0]] = 1.0
        for k, rows in self.psd_groups:
            e[rows] = psd.identity(k)
        return e

    def min_eig(self, v: np.ndarray) -> np.ndarray:
        """Per element, the least eigenvalue of v (< 0: outside the cone)."""
        out = v[:, : self.nonneg].min(axis=1, initial=np.inf)
        for _, rows in self.groups:
            b = v[:, rows]
            out = np.minimum(out, (b[..., 0] - np.linalg.norm(b[..., 1:], axis=-1)).min(axis=1))
        for k, rows in self.psd_groups:
            out = np.minimum(out, psd.min_eig(v[:, rows], k).min(axis=1))
        return out

    def raise_to(self, v: np.ndarray, floor: np.ndarray) -> None:
        """Move each element of v (in place) so that its eigenvalues are ≥ ``floor`` (B,):
        orthant entries by entry, second-order cones by adding a multiple of e."""
        head = v[:, : self.nonneg]
        np.maximum(head, floor[:, None], out=head)
        for _, rows in self.groups:
            b = v[:, rows]
            lo = b[..., 0] - np.linalg.norm(b[..., 1:], axis=-1)
            v[:, rows[:, 0]] += np.maximum(0.0, floor[:, None] - lo)
        for k, rows in self.psd_groups:
            v[:, rows] = psd.raise_to(v[:, rows], floor, k)

    def prod(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The Jordan product u ∘ v."""
        out = u * v
        for _, rows in self.groups:
            a, b = u[:, rows], v[:, rows]
            r = a[..., :1] * b + b[..., :1] * a
            r[..., 0] = (a * b).sum(axis=-1)
            out[:, rows] = r
        for k, rows in self.psd_groups:
            out[:, rows] = psd.prod(u[:, rows], v[:, rows], k)
        return out

    def div_lorentz(self, lam: np.ndarray, r: np.ndarray) -> np.ndarray:
        """x with λ ∘ x = r on the orthant and second-order cones (λ inside; the PSD
        rows are r's, for :meth:`Scaling.div` to overwrite)."""
        out = r.copy()
        out[:, : self.nonneg] = r[:, : self.nonneg] / lam[:, : self.nonneg]
        for _, rows in self.groups:
            a, b = lam[:, rows], r[:, rows]
            det = a[..., 0] ** 2 - (a[..., 1:] ** 2).sum(axis=-1)
            x0 = (a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(axis=-1)) / det
            x = np.empty_like(b)
            x[..., 0] = x0
            x[..., 1:] = (b[..., 1:] - x0[..., None] * a[..., 1:]) / a[..., :1]
            out[:, rows] = x
        return out

    def step_lorentz(self, v: np.ndarray, dv: np.ndarray) -> np.ndarray:
        """Per element, the largest α ≤ 1 with v + α dv in the orthant and second-order
        cones (v inside; PSD cones: :meth:`Scaling.max_step`)."""
        head, dhead = v[:, : self.nonneg], dv[:, : self.nonneg]
        ratio = np.where(dhead < 0, -head / np.where(dhead < 0, dhead, -1.0), np.inf)
        alpha = np.minimum(1.0, ratio.min(axis=1, initial=np.inf))
        for _, rows in self.groups:
            alpha = np.minimum(alpha, _soc_step(v[:, rows], dv[:, rows]).min(axis=1))
        return alpha

    def scaling(self, s: np.ndarray, z: np.ndarray) -> Scaling:
        """The Nesterov–Todd scaling at (s, z), both inside the cone."""
        k = self.nonneg
        d = np.sqrt(s[:, :k] / z[:, :k])
        soc = [_soc_scaling(s[:, rows], z[:, rows]) for _, rows in self.groups]
        mats = [psd.scaling(s[:, rows], z[:, rows], order) for order, rows in self.psd_groups]
        return Scaling(self, d, soc, mats)


def _grouped(start: int, sizes: tuple[int, ...], widths) -> tuple[tuple[int, np.ndarray], ...]:
    """Cones laid out from row ``start`` with ``widths`` rows each, grouped by ``sizes``:
    per size, the (count, width) rows of its cones."""
    starts = start + np.concatenate([[0], np.cumsum(widths)[:-1]]).astype(int)
    groups = []
    for q in sorted(set(sizes)):
        mask = np.asarray(sizes) == q
        width = int(np.asarray(widths)[mask][0])
        groups.append((q, starts[mask][:, None] + np.arange(width)[None, :]))
    return tuple(groups)


def _soc_step(x: np.ndarray, d: np.ndarray) -> np.ndarray:
    """(B, c): the largest α with x + α d in the second-order cone, from the quadratic
    (x₀ + α d₀)² − ‖x₁ + α d₁‖² = a α² + 2 b α + c, c > 0 (inf: no boundary)."""
    a = d[..., 0] ** 2 - (d[..., 1:] ** 2).sum(axis=-1)
    b = x[..., 0] * d[..., 0] - (x[..., 1:] * d[..., 1:]).sum(axis=-1)
    c = x[..., 0] ** 2 - (x[..., 1:] ** 2).sum(axis=-1)
    disc = np.sqrt(np.maximum(b * b - a * c, 0.0))
    tiny = np.abs(a) <= 1e-14 * (np.abs(b) + np.abs(c))
    safe_a = np.where(tiny, 1.0, a)
    r1, r2 = (-b - disc) / safe_a, (-b + disc) / safe_a
    step = np.where(a < 0, np.maximum(r1, r2),
                    np.where((b < 0) & (b * b >= a * c), np.minimum(r1, r2), np.inf))
    linear = np.where(b < 0, -c / (2.0 * np.where(b < 0, b, -1.0)), np.inf)
    return np.where(tiny, linear, np.maximum(step, 0.0))


def _soc_scaling(s: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w̄ (B, c, q), η (B, c)) of the NT scaling of cones (B, c, q)."""
    def jnorm(v):
        return np.sqrt(np.maximum(v[..., 0] ** 2 - (v[..., 1:] ** 2).sum(axis=-1), 1e-300))

    ns, nz = jnorm(s), jnorm(z)
    sb, zb = s / ns[..., None], z / nz[..., None]
    gamma = np.sqrt(np.maximum((1.0 + (sb * zb).sum(axis=-1)) / 2.0, 1e-300))
    jz = zb.copy()
    jz[..., 1:] *= -1.0
    wbar = (sb + jz) / (2.0 * gamma[..., None])
    return wbar, np.sqrt(ns / nz)


@dataclass
class Scaling:
    """The NT scaling W of a batch: ``d`` (B, nonneg) on the orthant, ``soc`` one
    (w̄, η) per group of second-order cones of one size, ``psd`` one (R, R⁻¹) per group
    of PSD cones of one order (:mod:`._psd_ops`)."""

    cones: Cones
    d: np.ndarray
    soc: list[tuple[np.ndarray, np.ndarray]]
    psd: list[tuple[np.ndarray, ...]] = field(default_factory=list)

    def _apply(self, v: np.ndarray, inverse: bool, times: int = 1,
               transpose: bool = False) -> np.ndarray:
        k = self.cones.nonneg
        out = np.empty_like(v)
        out[:, :k] = v[:, :k] * (self.d ** (-times if inverse else times))
        for (_, rows), (wbar, eta) in zip(self.cones.groups, self.soc, strict=True):
            b = v[:, rows]
            for _ in range(times):
                b = _soc_apply(wbar, eta, b, inverse)
            out[:, rows] = b
        for (order, rows), (R, Rinv, _) in zip(self.cones.psd_groups, self.psd, strict=True):
            # W X = RᵀXR, W⁻¹ X = R⁻ᵀXR⁻¹, W⁻ᵀ X = R⁻¹XR⁻ᵀ, (WᵀW)⁻¹ = W⁻¹W⁻ᵀ.
            b = v[:, rows]
            if times == 2:
                b = psd.congruence(Rinv, b, order, transpose=True)
            out[:, rows] = psd.congruence(Rinv if inverse else R, b, order,
                                          transpose=transpose)
        return out

    def w(self, v: np.ndarray) -> np.ndarray:
        """W v."""
        return self._apply(v, inverse=False)

    def winv(self, v: np.ndarray) -> np.ndarray:
        """W⁻¹ v."""
        return self._apply(v, inverse=True)

    def winv_t(self, v: np.ndarray) -> np.ndarray:
        """W⁻ᵀ v (W⁻¹ v but on PSD cones)."""
        return self._apply(v, inverse=True, transpose=True)

    def hinv(self, v: np.ndarray) -> np.ndarray:
        """(WᵀW)⁻¹ v."""
        return self._apply(v, inverse=True, times=2)

    def orthant_weights(self) -> np.ndarray:
        """z/s on the orthant rows: the diagonal of (WᵀW)⁻¹ there."""
        return self.d ** -2.0

    def soc_blocks(self) -> list[np.ndarray]:
        """Per group, (WᵀW)⁻¹'s blocks (B, count, q, q)."""
        out = []
        for wbar, eta in self.soc:
            q = wbar.shape[-1]
            jw = wbar.copy()
            jw[..., 1:] *= -1.0
            J = np.diag(np.r_[1.0, -np.ones(q - 1)])
            # W² = η² (2 w̄ w̄ᵀ − J), so (WᵀW)⁻¹ = (2 J w̄ w̄ᵀ J − J) / η².
            out.append((2.0 * jw[..., :, None] * jw[..., None, :] - J)
                       / (eta**2)[..., None, None])
        return out

    def psd_blocks(self) -> list[np.ndarray]:
        """Per group of PSD cones, (WᵀW)⁻¹'s blocks (B, count, d, d): X ↦ G X G with
        G = R⁻ᵀR⁻¹."""
        return [psd.hessian_block(np.swapaxes(Rinv, -1, -2) @ Rinv, order)
                for (order, _), (_, Rinv, _) in zip(self.cones.psd_groups, self.psd,
                                                    strict=True)]

    def lam(self, z: np.ndarray) -> np.ndarray:
        """λ = W z (= W⁻ᵀ s), exactly diagonal on PSD cones."""
        out = self.w(z)
        for (order, rows), (_, _, lam) in zip(self.cones.psd_groups, self.psd, strict=True):
            out[:, rows] = psd.diagonal(lam, order)
        return out

    def div(self, lam: np.ndarray, r: np.ndarray) -> np.ndarray:
        """x with λ ∘ x = r for this scaling's ``lam`` (:meth:`lam`)."""
        out = self.cones.div_lorentz(lam, r)
        for (order, rows), (_, _, d) in zip(self.cones.psd_groups, self.psd, strict=True):
            out[:, rows] = psd.diagonal_div(d, r[:, rows], order)
        return out

    def max_step(self, v: np.ndarray, dv: np.ndarray, primal: bool) -> np.ndarray:
        """Per element, the largest α ≤ 1 with v + α dv in the cone, v the scaling's point
        (s if ``primal``, else z): on PSD cones from λ + α W⁻ᵀ ds (or λ + α W dz), which
        is in the cone exactly when v + α dv is (W is a congruence)."""
        alpha = self.cones.step_lorentz(v, dv)
        for (order, rows), (R, Rinv, lam) in zip(self.cones.psd_groups, self.psd,
                                                 strict=True):
            scaled = psd.congruence(Rinv if primal else R, dv[:, rows], order,
                                    transpose=primal)
            alpha = np.minimum(alpha, psd.diagonal_step(lam, scaled, order).min(axis=1))
        return alpha


def _soc_apply(wbar, eta, v, inverse: bool) -> np.ndarray:
    """W v or W⁻¹ v on cones (B, c, q), W = η [[w̄₀, w̄₁ᵀ], [w̄₁, I + w̄₁w̄₁ᵀ/(1 + w̄₀)]]
    (W⁻¹: the same with w̄₁ negated, over η)."""
    w0, w1 = wbar[..., :1], wbar[..., 1:]
    sign = -1.0 if inverse else 1.0
    dot = (w1 * v[..., 1:]).sum(axis=-1, keepdims=True)
    out = np.empty_like(v)
    out[..., :1] = w0 * v[..., :1] + sign * dot
    out[..., 1:] = v[..., 1:] + (sign * v[..., :1] + dot / (1.0 + w0)) * w1
    return out / eta[..., None] if inverse else out * eta[..., None]
