"""PyTorch layers: ``from convexlayers.torch import CvxpyLayer``."""

from convexlayers.torch._layer import CvxpyLayer

__all__ = ["CvxpyLayer"]
