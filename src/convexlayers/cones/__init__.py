"""Cones of the canonical cone program: dimensions, projections and their derivatives.

See :mod:`convexlayers.cones._dims` for the conventions (row order, svec, exponential
and power cone orientation). Everything here is NumPy and framework-free.

Product cone (batched, ``v`` of shape (B, m)):

* :func:`project_primal` / :func:`project_dual`: Π_K(v) and Π_{K*}(v).
* :func:`dual_projection_jacobian`: D = DΠ_{K*}(v) as a :class:`ConeJacobian`
  (block diagonal, symmetric, eigenvalues in [0, 1]).

Single cones (stacked, ``v`` of shape (N, k)): ``project_soc``, ``project_psd``,
``project_exp``, ``project_power`` onto the primal cones, and the matching
``*_projection_jacobian`` returning (N, k, k).
"""

from convexlayers.cones._dims import ConeDims, svec_size
from convexlayers.cones._exp import exp_projection_jacobian, project_exp
from convexlayers.cones._jacobian import ConeJacobian
from convexlayers.cones._power import power_projection_jacobian, project_power
from convexlayers.cones._product import dual_projection_jacobian, project_dual, project_primal
from convexlayers.cones._psd import project_psd, psd_projection_jacobian, smat, svec
from convexlayers.cones._soc import project_soc, soc_projection_jacobian

__all__ = [
    "ConeDims",
    "ConeJacobian",
    "dual_projection_jacobian",
    "exp_projection_jacobian",
    "power_projection_jacobian",
    "project_dual",
    "project_exp",
    "project_power",
    "project_primal",
    "project_psd",
    "project_soc",
    "psd_projection_jacobian",
    "smat",
    "soc_projection_jacobian",
    "svec",
    "svec_size",
]
