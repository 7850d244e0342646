"""Tiny real training set-ups: a StyleGAN2 prior file, a data module over tests/conftest.py's image_dir."""

from __future__ import annotations

import pytest
import torch

from grain_pl.data import GrainDataModule
from grain_pl.networks import get_preset
from grain_pl.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from grain_pl.weights.stylegan2_rosinality import export_rosinality

PRESET = "tiny-32-lr8"


@pytest.fixture(scope="session")
def prior_file(tmp_path_factory):
    config = get_preset(PRESET)
    torch.manual_seed(1)
    generator = StyleGAN2Generator(config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                   channel_max=config.generator_channel_max)
    discriminator = StyleGAN2Discriminator(config.hr_size, channel_max=config.generator_channel_max)
    return export_rosinality(generator, discriminator, torch.zeros(config.style_dim),
                             tmp_path_factory.mktemp("prior") / "prior.pt")


@pytest.fixture
def datamodule(image_dir):
    return GrainDataModule(data_dir=str(image_dir), image_size=32, split="folder", test_fraction=0.25,
                           batch_size=2, num_workers=0)


@pytest.fixture
def trainer_kwargs(tmp_path):
    return dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=str(tmp_path))
