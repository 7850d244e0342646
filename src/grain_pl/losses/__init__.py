"""Loss terms of the GRAIN objective."""

from grain_pl.losses.adversarial import (
    ADVERSARIAL_KINDS,
    AdversarialKind,
    discriminator_adversarial_loss,
    discriminator_r1,
    generator_adversarial_loss,
    lazy_r1_weight,
    logistic_discriminator_loss,
    logistic_generator_loss,
    r1_penalty,
    ragan_discriminator_loss,
    ragan_generator_loss,
    wgan_discriminator_loss,
    wgan_generator_loss,
)
from grain_pl.losses.identity import IdentityLoss, crop_faces
from grain_pl.losses.perceptual import PerceptualLoss
from grain_pl.losses.reconstruction import DownsampleMode, LRGuidanceLoss, downsample, pixel_loss
from grain_pl.losses.weighting import LossWeights, weighted_sum

__all__ = [
    "ADVERSARIAL_KINDS",
    "AdversarialKind",
    "DownsampleMode",
    "IdentityLoss",
    "LRGuidanceLoss",
    "LossWeights",
    "PerceptualLoss",
    "crop_faces",
    "discriminator_adversarial_loss",
    "discriminator_r1",
    "downsample",
    "generator_adversarial_loss",
    "lazy_r1_weight",
    "logistic_discriminator_loss",
    "logistic_generator_loss",
    "pixel_loss",
    "r1_penalty",
    "ragan_discriminator_loss",
    "ragan_generator_loss",
    "weighted_sum",
    "wgan_discriminator_loss",
    "wgan_generator_loss",
]
