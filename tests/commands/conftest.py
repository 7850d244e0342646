"""Shared by the codec command tests: a tiny real model file (module-scoped per test module)."""

from __future__ import annotations

import pytest
import torch

from grain_pl.codec import GrainModule
from grain_pl.weights.grain_checkpoint import save_grain

PRESET = "tiny-32-lr8"


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    return save_grain(GrainModule(network=PRESET).grain, tmp_path_factory.mktemp("model") / "tiny.safetensors",
                      preset=PRESET)
