from __future__ import annotations

import pytest
import torch

from grain_pl.codec import GrainModule


@pytest.fixture(scope="module")
def model() -> GrainModule:
    """A seeded tiny GRAIN model (random weights): the model the evaluation tests evaluate."""
    torch.manual_seed(0)
    return GrainModule(network="tiny-32-lr8")
