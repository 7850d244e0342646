"""Shared fixtures: everything tiny, on the CPU, with fixed seeds, and W&B kept inside the test's folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

# Variables that choose what W&B or our logger does; a test starts with none of them set.
WANDB_CHOICES = ("WANDB_MODE", "GRAIN_PL_NO_WANDB", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME")
WANDB_FOLDERS = ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_config():
    from grain_pl.networks import get_preset

    return get_preset("tiny-32-lr8")


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    """Eight smooth random colour images (32x32 PNGs)."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for index in range(8):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((32, 32), Image.BICUBIC).save(folder / f"{index:02d}.png")
    return folder


@pytest.fixture
def isolated_wandb(tmp_path, monkeypatch):
    """No W&B mode chosen, quiet, every W&B folder inside tmp_path; the open run is finished afterwards."""
    for variable in WANDB_CHOICES:
        # Set, then delete: monkeypatch then restores the variable even when W&B or Lightning sets it meanwhile
        # (WandbLogger(offline=True) writes WANDB_MODE); a plain delenv of an absent variable records nothing.
        monkeypatch.setenv(variable, "")
        monkeypatch.delenv(variable)
    monkeypatch.setenv("WANDB_SILENT", "true")
    for variable in WANDB_FOLDERS:
        monkeypatch.setenv(variable, str(tmp_path / "wandb_home"))
    yield
    import wandb

    if wandb.run is not None:
        wandb.finish()
    wandb.teardown()  # the W&B singleton keeps settings (mode, folders) from this test's environment otherwise
