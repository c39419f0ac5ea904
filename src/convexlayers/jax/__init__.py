"""JAX layers: ``from convexlayers.jax import CvxpyLayer``."""

from convexlayers.jax._layer import CvxpyLayer

__all__ = ["CvxpyLayer"]
