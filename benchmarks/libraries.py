"""The layers under test, each behind one adapter: ``make(workload) -> call(tensors, grad)``.

Solver settings (all left at each solver's defaults unless said here):

* convexlayers: ``solver=None``, the automatic choice: NATIVE (batched IPM, 1e-9) on
  LP/QP batches with a dense reduced system, Clarabel 1e-8 (tol_gap_abs/rel, tol_feas)
  otherwise; derivative by dense LU up to 600 unknowns, sparse LU above. Also run with
  the backend forced: ``convexlayers[clarabel]`` and ``convexlayers[native]``.
* cvxpylayers default: its DIFFCP path; diffcp picks ECOS (abstol/reltol/feastol 1e-8)
  for problems without PSD / dual exp cones, lifts quadratic objectives to SOCs, and
  differentiates with mode="lsqr". Its batch thread pool gets ``threads`` workers.
* cvxpylayers same-solver: the DIFFCP path with ``solve_method="CLARABEL"`` (1e-8, as ours).
* cvxpylayers MOREAU: ``solver="MOREAU"`` on moreau-cpu, Moreau's defaults
  (solver="auto": active set for small QPs, IPM otherwise; 1e-8), and with solver="ipm".
* qpth: ``QPFunction`` with its defaults (PDIPM_BATCHED, eps=1e-12, maxIter=20).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass

import torch

from workloads import Workload

Call = Callable[[list[torch.Tensor], bool], tuple[torch.Tensor, ...]]


@dataclass(frozen=True)
class Library:
    name: str
    package: str
    config: str
    make: Callable[[Workload, int], Call]
    supports: Callable[[Workload], str | None] = lambda w: None

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.package)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"


def _ours(w: Workload, threads: int, solver: str | None = None) -> Call:
    from convexlayers.torch import CvxpyLayer

    prob, params, variables = w.build()
    layer = CvxpyLayer(prob, parameters=params, variables=variables, solver=solver)
    return lambda t, grad: layer(*t)


def _ours_native(w: Workload, threads: int) -> Call:
    return _ours(w, threads, solver="NATIVE")


def _ours_clarabel(w: Workload, threads: int) -> Call:
    return _ours(w, threads, solver="CLARABEL")


def _native_supports(w: Workload) -> str | None:
    cones = set(w.cones.split(" (")[0].split(", ")) - {"none"}
    return None if cones <= {"zero", "nonneg", "soc", "psd"} else \
        "the native solver takes no exponential or power cones"


def _cvxpylayers(solver: str | None, args: dict) -> Callable[[Workload, int], Call]:
    def make(w: Workload, threads: int) -> Call:
        from cvxpylayers.torch import CvxpyLayer

        prob, params, variables = w.build()
        layer = CvxpyLayer(prob, parameters=params, variables=variables, solver=solver,
                           solver_args=dict(args))
        if solver is not None:
            return lambda t, grad: layer(*t)
        # diffcp's solve-only path rejects n_jobs_backward, so pass it only with grad.
        fwd = {"n_jobs_forward": threads}
        both = {**fwd, "n_jobs_backward": threads}
        return lambda t, grad: layer(*t, solver_args=both if grad else fwd)

    return make


def _qpth(w: Workload, threads: int) -> Call:
    from qpth.qp import QPFunction

    fn = QPFunction(verbose=-1)
    return lambda t, grad: (fn(*w.qpth(t)),)


def _qpth_supports(w: Workload) -> str | None:
    return None if w.qpth is not None else w.qpth_skip


OURS = Library("convexlayers", "convexlayers", "CLARABEL (default), tol 1e-8", _ours)

LIBRARIES = [
    OURS,
    Library("cvxpylayers", "cvxpylayers", "default: DIFFCP (diffcp -> ECOS, lsqr), tol 1e-8",
            _cvxpylayers(None, {})),
    Library("cvxpylayers[clarabel]", "cvxpylayers",
            "DIFFCP with solve_method=CLARABEL, tol 1e-8", _cvxpylayers(None, {
                "solve_method": "CLARABEL"})),
    Library("cvxpylayers[moreau]", "moreau", "solver=MOREAU, Moreau defaults (auto)",
            _cvxpylayers("MOREAU", {})),
    Library("cvxpylayers[moreau-ipm]", "moreau", "solver=MOREAU, solver=ipm",
            _cvxpylayers("MOREAU", {"solver": "ipm"})),
    Library("qpth", "qpth", "PDIPM_BATCHED, eps 1e-12, maxIter 20", _qpth, _qpth_supports),
    Library("convexlayers[native]", "convexlayers", "solver=NATIVE (batched IPM), tol 1e-9",
            _ours_native, _native_supports),
    Library("convexlayers[clarabel]", "convexlayers", "solver=CLARABEL, tol 1e-8",
            _ours_clarabel),
]
