"""Substitute out CVXPY's defined variables before the interior-point method runs.

CVXPY writes ``sum_squares(L @ x)`` as ``½‖t‖²`` with a new variable ``t`` and an
equality row ``t - L x = 0``: the program doubles in size (a 50-variable QP becomes 100
variables and 50 more equality rows), and every iteration pays for it. A variable ``t``
is *defined* when

* it appears in exactly one equality row, with a coefficient ``a`` nonzero in every
  element of the batch, and that row holds no other defined variable;
* it appears in no inequality row;
* its row and column of P hold at most the diagonal entry ``p``.

Then ``t = (b_e - m x) / a`` for the row's other coefficients ``m``, and substituting it
turns ``½ p t² + q_t t`` into a quadratic in the kept variables (P gains
``p (m/a)ᵀ(m/a)``, q gains ``-(m/a)ᵀ(p b_e/a + q_t)``). The IPM solves the smaller QP;
:meth:`Presolved.recover` puts ``t`` back and recovers its row's multiplier from
stationarity in ``t``: ``p t + q_t + a y_e = 0``. The pattern is the batch's, so the
substitution is one batched product per solve, not per iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convexlayers.solvers._reduced import BatchQP


@dataclass
class Presolved:
    """The reduced batch and what :meth:`recover` needs: kept variables ``keep``, defined
    ones ``t`` with their rows ``rows`` and kept equality rows ``other``."""

    qp: BatchQP
    keep: np.ndarray
    t: np.ndarray
    rows: np.ndarray
    other: np.ndarray
    full: BatchQP

    def recover(self, x: np.ndarray, yz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The full x and y_z from the reduced problem's x and y_z (one row per element)."""
        f = self.full
        B, n = f.q.shape
        a = f.Az[:, self.rows, self.t]
        m = _block(f.Az, self.rows, self.keep)
        t = (f.bz[:, self.rows] - (m @ x[..., None])[..., 0]) / a
        p = _diag(f, self.t)
        full_x = np.empty((B, n))
        full_x[:, self.keep], full_x[:, self.t] = x, t
        full_y = np.empty((B, f.Az.shape[1]))
        full_y[:, self.other] = yz
        full_y[:, self.rows] = -(p * t + f.q[:, self.t]) / a
        return full_x, full_y

    def reduce_warm(self, warm: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
        """A starting point (x, y_z, y_l, s) of the full batch, for the reduced one."""
        x, yz, yl, s = warm
        return x[:, self.keep], yz[:, self.other], yl, s


def _block(X: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """X[:, rows][:, :, cols], C-ordered (``X[:, rows[:, None], cols]`` would put the
    batch axis innermost, and every product of the IPM would then work on strided data)."""
    return X.take(rows, axis=1).take(cols, axis=2)


def _diag(qp: BatchQP, idx: np.ndarray) -> np.ndarray:
    return np.zeros((qp.q.shape[0], idx.size)) if qp.P is None else qp.P[:, idx, idx]


def defined(qp: BatchQP) -> tuple[np.ndarray, np.ndarray]:
    """The defined variables of the batch and their equality rows (see the module)."""
    Az = qp.Az != 0
    in_ineq = (qp.Al != 0).any(axis=(0, 1))
    pattern_z = Az.any(axis=0)
    once = pattern_z.sum(axis=0) == 1
    cand = once & ~in_ineq
    if qp.P is not None:
        off = (qp.P != 0).any(axis=0)
        np.fill_diagonal(off, False)
        cand &= ~off.any(axis=0)
    cols = np.flatnonzero(cand & Az.all(axis=0).any(axis=0))
    if not cols.size:
        return cols, cols
    rows = pattern_z[:, cols].argmax(axis=0)
    # One defined variable per row: keep the first of each row.
    rows, first = np.unique(rows, return_index=True)
    return cols[first], rows


def presolve(qp: BatchQP) -> Presolved | None:
    """The batch with its defined variables substituted out, or None if it has none."""
    t, rows = defined(qp)
    if not t.size:
        return None
    n, z = qp.q.shape[1], qp.Az.shape[1]
    keep = np.setdiff1d(np.arange(n), t)
    other = np.setdiff1d(np.arange(z), rows)
    a = qp.Az[:, rows, t]
    M = _block(qp.Az, rows, keep) / a[..., None]  # t = c - M x
    c = qp.bz[:, rows] / a
    p = _diag(qp, t)
    P = None if qp.P is None else _block(qp.P, keep, keep)
    if p.any():
        extra = np.swapaxes(M, 1, 2) @ (p[..., None] * M)
        P = extra if P is None else P + extra
    q = qp.q[:, keep] - (np.swapaxes(M, 1, 2) @ (p * c + qp.q[:, t])[..., None])[..., 0]
    reduced = BatchQP(P, q, _block(qp.Az, other, keep), qp.bz[:, other],
                      qp.Al.take(keep, axis=2), qp.bl, qp.cone)
    return Presolved(reduced, keep, t, rows, other, qp)
