"""A random StyleGAN2 prior file for the stage tests."""

from __future__ import annotations

from pathlib import Path

import torch

from grain_pl.networks import get_preset
from grain_pl.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from grain_pl.weights.stylegan2_rosinality import export_rosinality


def write_random_prior(preset: str, folder: Path) -> Path:
    """A seeded random StyleGAN2 of `preset`'s size, exported as a rosinality checkpoint in `folder`."""
    config = get_preset(preset)
    torch.manual_seed(1)
    generator = StyleGAN2Generator(config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                   channel_max=config.generator_channel_max)
    discriminator = StyleGAN2Discriminator(config.hr_size, channel_max=config.generator_channel_max)
    return export_rosinality(generator, discriminator, torch.zeros(config.style_dim), folder / "prior.pt")
