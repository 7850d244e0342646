"""Shared fixtures: everything tiny, on the CPU, with fixed seeds."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def tiny_config():
    from grain_pl.networks import get_preset

    return get_preset("tiny-32-lr8")
