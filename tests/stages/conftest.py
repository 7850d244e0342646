"""Tiny real training set-ups: a StyleGAN2 prior file, a data module over tests/conftest.py's image_dir."""

from __future__ import annotations

import pytest
from stage_priors import write_random_prior  # tests/stages/stage_priors.py

from grain_pl.data import GrainDataModule

PRESET = "tiny-32-lr8"


@pytest.fixture(scope="session")
def prior_file(tmp_path_factory):
    return write_random_prior(PRESET, tmp_path_factory.mktemp("prior"))


@pytest.fixture
def datamodule(image_dir):
    return GrainDataModule(data_dir=str(image_dir), image_size=32, split="folder", test_fraction=0.25,
                           batch_size=2, num_workers=0)


@pytest.fixture
def trainer_kwargs(tmp_path):
    return dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, default_root_dir=str(tmp_path))
