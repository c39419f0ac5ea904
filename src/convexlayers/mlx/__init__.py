"""MLX layers: ``from convexlayers.mlx import CvxpyLayer``."""

from convexlayers.mlx._layer import CvxpyLayer

__all__ = ["CvxpyLayer"]
