"""The cone K of the canonical cone program and its row layout.

Conventions, stated once for the whole library (solver adapters convert at
their boundary):

* Rows are ordered: zero cone, nonnegative orthant, second-order cones,
  PSD cones, exponential cones, power cones.
* Second-order cone of dimension k: ``(t, z)`` with ``||z||_2 <= t``.
* PSD cone of order k: ``svec(X)``, the upper triangle of the symmetric
  matrix X in column-major order ``(0,0), (0,1), (1,1), (0,2), (1,2), ...``,
  off-diagonal entries multiplied by sqrt(2) so that ``svec`` is an isometry.
  It has ``k (k + 1) / 2`` rows.
* Exponential cone: ``(x, y, z)`` with ``y exp(x / y) <= z, y > 0`` (closure).
* Power cone with exponent a in (0, 1): ``(x, y, z)`` with
  ``x^a y^(1-a) >= |z|, x >= 0, y >= 0``.

The primal slack ``s`` lives in K and the dual ``y`` in the dual cone K*.
The zero cone's dual is the free cone; the others above are self-dual except
the exponential and power cones.
"""

from __future__ import annotations

from dataclasses import dataclass


def svec_size(k: int) -> int:
    """Number of rows of the svec of a k-by-k symmetric matrix."""
    return k * (k + 1) // 2


@dataclass(frozen=True)
class ConeDims:
    """Dimensions of the product cone K, in row order.

    Attributes:
        zero: rows of the zero cone {0}.
        nonneg: rows of the nonnegative orthant.
        soc: dimension of each second-order cone.
        psd: order k of each PSD cone (each takes k(k+1)/2 rows).
        exp: number of exponential cones (3 rows each).
        power: exponent alpha of each 3-d power cone.
    """

    zero: int = 0
    nonneg: int = 0
    soc: tuple[int, ...] = ()
    psd: tuple[int, ...] = ()
    exp: int = 0
    power: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "soc", tuple(int(k) for k in self.soc))
        object.__setattr__(self, "psd", tuple(int(k) for k in self.psd))
        object.__setattr__(self, "power", tuple(float(a) for a in self.power))
        if self.zero < 0 or self.nonneg < 0 or self.exp < 0:
            raise ValueError(f"cone dimensions must be nonnegative, got {self}")
        if any(k < 1 for k in self.soc) or any(k < 1 for k in self.psd):
            raise ValueError(f"SOC and PSD cones must have dimension >= 1, got {self}")
        if any(not 0.0 < a < 1.0 for a in self.power):
            raise ValueError(f"power cone exponents must lie in (0, 1), got {self.power}")

    @property
    def size(self) -> int:
        """Total number of rows m."""
        return (
            self.zero
            + self.nonneg
            + sum(self.soc)
            + sum(svec_size(k) for k in self.psd)
            + 3 * self.exp
            + 3 * len(self.power)
        )

    @property
    def soc_start(self) -> int:
        return self.zero + self.nonneg

    @property
    def psd_start(self) -> int:
        return self.soc_start + sum(self.soc)

    @property
    def exp_start(self) -> int:
        return self.psd_start + sum(svec_size(k) for k in self.psd)

    @property
    def power_start(self) -> int:
        return self.exp_start + 3 * self.exp

    def kinds(self) -> frozenset[str]:
        """Names of the cone kinds present: zero, nonneg, soc, psd, exp, power."""
        present = {
            "zero": self.zero > 0,
            "nonneg": self.nonneg > 0,
            "soc": bool(self.soc),
            "psd": bool(self.psd),
            "exp": self.exp > 0,
            "power": bool(self.power),
        }
        return frozenset(name for name, here in present.items() if here)
