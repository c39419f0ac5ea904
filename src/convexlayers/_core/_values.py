"""Checks of parameter values against their declared domains (call time, before solving)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from convexlayers._errors import ParameterError
from convexlayers.compile import ParamSpec, unvec_f

# Tolerance for semidefiniteness of matrix parameters, relative to 1 + max |(X + Xᵀ)/2|.
MATRIX_RTOL = 1e-6

_SIGNS = {
    "nonneg": (lambda v: v >= 0, "nonnegative", "min", np.min),
    "pos": (lambda v: v > 0, "positive", "min", np.min),
    "nonpos": (lambda v: v <= 0, "nonpositive", "max", np.max),
    "neg": (lambda v: v < 0, "negative", "max", np.max),
}


def _where(bad: npt.ArrayLike, batched: bool) -> str:
    idx = np.flatnonzero(bad)
    if not batched:
        return ""
    shown = ", ".join(str(i) for i in idx[:10]) + (", ..." if idx.size > 10 else "")
    return f" in batch elements [{shown}]"


def check_values(specs: Sequence[ParamSpec], theta: np.ndarray, batched: bool) -> None:
    """Raise :class:`ParameterError` for NaN/Inf or values outside a parameter's domain."""
    for spec in specs:
        block = theta[:, spec.offset : spec.offset + spec.size]
        finite = np.isfinite(block).all(axis=1)
        if not finite.all():
            raise ParameterError(
                f"parameter {spec.label}: contains NaN or Inf{_where(~finite, batched)}."
            )
        for attr in sorted(spec.domain & _SIGNS.keys()):
            test, word, which, agg = _SIGNS[attr]
            ok = test(block).all(axis=1)
            if not ok.all():
                raise ParameterError(
                    f"parameter {spec.label}: declared {attr}=True but has a {which} entry "
                    f"{agg(block[~ok]):.6g}{_where(~ok, batched)}; pass {word} values."
                )
        if spec.logged:
            ok = (block > 0).all(axis=1)
            if not ok.all():
                raise ParameterError(
                    f"parameter {spec.label}: with gp=True it enters through its logarithm "
                    f"and must be positive, but has entries <= 0{_where(~ok, batched)}; "
                    "pass positive values."
                )
        if spec.bounds is not None:
            _check_bounds(spec, block, batched)
        if spec.domain & {"symmetric", "psd", "nsd", "diag"}:
            _check_matrix(spec, unvec_f(block, spec.shape), batched)


def _check_bounds(spec: ParamSpec, block: np.ndarray, batched: bool) -> None:
    """Values must lie within the declared bounds; the message shows the first offender."""
    assert spec.bounds is not None
    lo, hi = spec.bounds
    outside = (block < lo) | (block > hi)
    if outside.any():
        b, j = np.argwhere(outside)[0]
        index = tuple(int(i) for i in np.unravel_index(j, spec.shape, order="F"))
        raise ParameterError(
            f"parameter {spec.label}: entry {index} is {block[b, j]:.6g}, outside its "
            f"declared bounds [{lo[j]:.6g}, {hi[j]:.6g}]{_where(outside.any(axis=1), batched)}; "
            "pass values within the bounds."
        )


def _check_matrix(spec: ParamSpec, mats: np.ndarray, batched: bool) -> None:
    """Diagonal parameters must be diagonal; PSD/NSD ones semidefinite once symmetrized.

    Symmetric, PSD and NSD parameters are not checked for symmetry: the compiled
    parameter map uses (X + Xᵀ)/2, as the README says, so an asymmetric value is the
    same as its symmetric part. Rejecting it would also break finite-difference checkers
    such as ``jax.test_util.check_grads`` and ``torch.autograd.gradcheck``, which perturb
    one entry at a time.
    """
    if "diag" in spec.domain:
        off = np.abs(mats - np.einsum("bii->bi", mats)[:, :, None] * np.eye(mats.shape[1]))
        bad = off.max(axis=(1, 2)) > 0
        if bad.any():
            raise ParameterError(
                f"parameter {spec.label}: declared diag=True but has nonzero off-diagonal "
                f"entries{_where(bad, batched)}; pass a diagonal matrix."
            )
        return
    if not spec.domain & {"psd", "nsd"}:
        return
    sym = 0.5 * (mats + np.swapaxes(mats, 1, 2))
    scale = 1.0 + np.abs(sym).max(axis=(1, 2))
    eig = np.linalg.eigvalsh(sym)
    if "psd" in spec.domain:
        bad, word, val = eig[:, 0] < -MATRIX_RTOL * scale, "positive", eig[:, 0]
    else:
        bad, word, val = eig[:, -1] > MATRIX_RTOL * scale, "negative", eig[:, -1]
    if bad.any():
        raise ParameterError(
            f"parameter {spec.label}: declared {word} semidefinite, but (X + Xᵀ)/2 has an "
            f"eigenvalue {val[bad][0]:.3g}{_where(bad, batched)}. Pass for example L @ L.T."
        )


def check_warm(warm: Any, n: int, m: int, size: int) -> tuple[np.ndarray, ...]:
    """Explicit starting points (x, y, s) of a call, as float64 arrays of rows.

    Raises:
        ParameterError: not three arrays of shapes (B, n), (B, m), (B, m).
    """
    expected = [(size, n), (size, m), (size, m)]
    try:
        arrays = tuple(np.asarray(a, dtype=np.float64) for a in warm)
    except (TypeError, ValueError) as err:
        raise ParameterError(
            f"warm_start: expected True, False or (x, y, s) arrays, received "
            f"{type(warm).__name__} ({err})."
        ) from err
    shapes = [a.shape for a in arrays]
    if shapes != expected:
        raise ParameterError(
            f"warm_start: expected (x, y, s) of shapes {expected} (a previous call's "
            f"Solution.state[:3] for this batch size and solver), received shapes {shapes}."
        )
    return arrays
