"""Loss terms of the GRAIN objective."""

from grain_pl.losses.perceptual import PerceptualLoss

__all__ = ["PerceptualLoss"]
