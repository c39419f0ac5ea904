"""Large second-order cones in J kept sparse by one extra unknown per cone.

Outside the cone and its polar, the SOC block of D = DΠ(t, u) is (see
:mod:`convexlayers.cones._soc`)

    D = ½ [[1, ûᵀ], [û, (1 + ρ) I − ρ û ûᵀ]] = S + γ w wᵀ,   ρ = t/‖u‖, û = u/‖u‖,

with S = diag(δ) plus a first row and column h = ½ û, w = (0, û) and γ = −ρ/2; inside
the cone D = I and on the polar D = 0 (S = D, γ = 0). As one dense k × k block, D makes
Aᵀ D dense over the cone's k rows in every column of A that meets the cone, so a
1,000-dimensional ``norm(x) <= r`` gives J a dense 1,000 × 1,000 block, whose sparse LU
fills in (0.3 s per element). Instead, with ζ = wᵀ v the cone's rows of J z = r read
A x + (S − I) v + γ w ζ, its columns Aᵀ S v + γ (Aᵀ w) ζ, and one more row wᵀ v − ζ = 0
closes the system: J̃ = [[J_S, γ c], [wᵀ-row, −1]], whose Schur complement on the new
unknown is J, so J̃ (z, ζ) = (r, 0) exactly when J z = r (and so for Jᵀ). J̃ has O(k)
entries per cone beyond those of A.

The derivative asks :func:`~convexlayers.cones.dual_projection_jacobian` for these
cones in factored form (δ, h, w, γ: ``ConeJacobian.low_rank``), so D's k × k blocks are
never formed either (200 MB per element at k = 5,000).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Second-order cones of at least this many rows are lifted (the derivative asks
# dual_projection_jacobian for them in factored form).
LIFT_MIN = 16


@dataclass(frozen=True, eq=False)
class Lift:
    """The products the lifted runs of D put into J.

    Attributes:
        rows: mask over D's rows: those of lifted cones.
        entries: mask over A's nonzeros: those in lifted rows.
        extra: the number of new unknowns (one per lifted cone).
        parts: (row, col, src, dsrc) of the lifted products, as in ``_kkt``.
    """

    rows: np.ndarray
    entries: np.ndarray
    extra: int
    parts: list


def plan_lift(n: int, N: int, a: tuple, layout, runs: tuple[int, ...], m: int,
              base: int, one_data: int) -> Lift:
    """The lifted products: A's nonzeros ``a`` = (rows, cols, data indices), J of N
    unknowns before the new ones, the lifted parts of dflat from index ``base``."""
    ar, ac, ak = a
    rows, entries = np.zeros(m, dtype=bool), np.zeros(ar.size, dtype=bool)
    parts: list = []
    extra = 0
    for i in runs:
        offset, count, k = layout[i]
        inside = (ar >= offset) & (ar < offset + count * k)
        rows[offset : offset + count * k] = True
        entries |= inside
        e = np.flatnonzero(inside)
        cone, local = np.divmod(ar[e] - offset, k)
        seg = base + np.arange(4)[:, None] * count * k  # δ, h, w, γw: (count·k) each
        at = cone * k + local
        first = offset + cone * k  # the first row of each entry's cone
        new = N + extra + cone  # its new unknown
        parts += _columns(n, ac[e], ak[e], local, first, seg + at, k, new)
        parts += _rows(n, N + extra, offset, count, k, seg, one_data)
        base += 4 * count * k
        extra += count
    return Lift(rows, entries, extra, parts)


def _columns(n, cols, data, local, first, at, k, new):
    """Aᵀ S and γ Aᵀ w for the nonzeros (row ``first + local``, col) of A; ``at``: each
    nonzero's places in the four dflat parts (δ, h, w, γw)."""
    delta, head, _, gw = at
    parts = [(cols, n + first + local, data, delta),  # diagonal of S
             (cols, new, data, gw)]  # γ Aᵀ w
    tail = local > 0  # entries of the tail rows meet h on the first column
    parts.append((cols[tail], n + first[tail], data[tail], head[tail]))
    top = np.flatnonzero(local == 0)  # entries of the first row meet all of h
    if top.size:
        step = np.tile(np.arange(1, k), top.size)
        which = np.repeat(top, k - 1)  # at a first-row entry, head is h₀'s place
        parts.append((cols[which], n + first[which] + step, data[which],
                      head[which] + step))
    return parts


def _rows(n, lift0, offset, count, k, seg, one_data):
    """S − I's entries but the −1 (D − I's diagonal part adds it), and the new rows and
    columns: γ w in the cone's rows, wᵀ in the new row."""
    rows = offset + np.arange(count * k)
    local = np.arange(count * k) % k
    first = rows - local
    new = lift0 + np.arange(count * k) // k
    j = np.arange(count * k)
    tail = local > 0
    return [(n + rows, n + rows, one_data, seg[0, 0] + j),  # δ
            (n + rows[tail], n + first[tail], one_data, seg[1, 0] + j[tail]),  # h
            (n + first[tail], n + rows[tail], one_data, seg[1, 0] + j[tail]),
            (n + rows[tail], new[tail], one_data, seg[3, 0] + j[tail]),  # γ w
            (new[tail], n + rows[tail], one_data, seg[2, 0] + j[tail])]  # wᵀ


def lift_values(delta: np.ndarray, head: np.ndarray, w: np.ndarray,
                gamma: np.ndarray) -> np.ndarray:
    """(4·count·k, B) dflat segment [δ | h | w | γw] of a lifted run's factored D
    blocks (δ, h, w (B, count, k), γ (B, count)), each part laid out cone by cone."""
    B = delta.shape[0]
    parts = np.stack([delta, head, w, gamma[..., None] * w])  # (4, B, count, k)
    return np.moveaxis(parts, 1, -1).reshape(-1, B)
