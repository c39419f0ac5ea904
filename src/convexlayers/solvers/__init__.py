"""Cone-program solver backends behind one interface.

Every backend takes a :class:`ConeProgram` in our conventions (see
:mod:`convexlayers.cones`) and returns x, y, s in the same conventions. A backend
module, and with it its solver package, is imported only when it is first asked
for, so ``import convexlayers`` imports none of clarabel, scs or ecos.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from convexlayers._errors import SolverArgumentError
from convexlayers.solvers._base import (
    COMPAT_KEYS,
    AbstractSolver,
    ConeProgram,
    SolveResult,
    SolverStatus,
)

DEFAULT_SOLVER = "CLARABEL"


@dataclass(frozen=True)
class _Backend:
    module: str
    cls: str
    package: str
    install: str


_BACKENDS = {
    "CLARABEL": _Backend(
        "convexlayers.solvers._clarabel", "ClarabelSolver", "clarabel", "pip install clarabel"
    ),
    "SCS": _Backend("convexlayers.solvers._scs", "SCSSolver", "scs", "pip install scs"),
    "ECOS": _Backend(
        "convexlayers.solvers._ecos",
        "ECOSSolver",
        "ecos",
        "pip install convexlayers[ecos] (or pip install ecos)",
    ),
    "NATIVE": _Backend(
        "convexlayers.solvers._native", "NativeSolver", "numpy", "pip install numpy"
    ),
}

_ALIASES = {
    **{name: name for name in _BACKENDS},
    **{backend.cls.upper(): name for name, backend in _BACKENDS.items()},
}


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def available_solvers() -> list[str]:
    """Names of the backends whose solver package is installed, default first."""
    return [name for name, backend in _BACKENDS.items() if _installed(backend.package)]


def get_solver(name: str | AbstractSolver, argument: str = "solver") -> AbstractSolver:
    """Return the backend called ``name``.

    Args:
        name: "CLARABEL", "SCS", "ECOS" or "NATIVE" (any case), a backend class name
            such as "SCSSolver", or a backend object (an :class:`AbstractSolver`, which
            may come from another package) returned as it is.
        argument: how error messages name the argument that gave ``name``.

    Raises:
        SolverArgumentError: if ``name`` is not a known backend, or its solver
            package is not installed.
    """
    if isinstance(name, AbstractSolver):
        return name
    key = _ALIASES.get(name.upper()) if isinstance(name, str) else None
    if key is None:
        raise SolverArgumentError(
            f"{argument}: unknown solver {name!r}; choose one of {list(_BACKENDS)}."
        )
    backend = _BACKENDS[key]
    if not _installed(backend.package):
        raise SolverArgumentError(
            f"{argument}: {key} needs the {backend.package!r} package, which is not "
            f"installed; run `{backend.install}`. Installed solvers: {available_solvers()}."
        )
    module = importlib.import_module(backend.module)
    return getattr(module, backend.cls)()


__all__ = [
    "COMPAT_KEYS",
    "DEFAULT_SOLVER",
    "AbstractSolver",
    "ConeProgram",
    "SolveResult",
    "SolverStatus",
    "available_solvers",
    "get_solver",
]
