"""The paper preset is exactly the official architecture: its parameter counts (docs/method.md §1.9)."""

from __future__ import annotations

import pytest
import torch

from grain_pl.networks import GRAIN, get_preset
from grain_pl.networks.patch_discriminator import PatchDiscriminator


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def paper_grain() -> GRAIN:
    with torch.device("meta"):  # shapes only: no memory, no init time
        return GRAIN("paper-1024-lr16")


def test_rescaling_module_count(paper_grain):
    assert count(paper_grain.encoder) == 7_493_187
    assert count(paper_grain.decoder) == 9_300_163
    assert count(paper_grain.encoder) + count(paper_grain.decoder) == 16_793_350


def test_latent_code_bank_count(paper_grain):
    assert count(paper_grain.latent_codes) == 34_053_312
    assert [count(block) for block in paper_grain.latent_codes.blocks[:4]] == [3_697_536] * 3 + [3_734_464]
    assert count(paper_grain.latent_codes.blocks[8]) == 3_919_104


def test_fusion_count(paper_grain):
    assert count(paper_grain.fusion) == 1_048_835


def test_generator_count_and_trainable_total(paper_grain):
    assert count(paper_grain.generator) == 30_370_060
    trainable = sum(p.numel() for p in paper_grain.parameters() if p.requires_grad)
    assert trainable == 51_895_497
    assert count(paper_grain) == 82_265_557


def test_decoder_layout_follows_the_official_one(paper_grain):
    decoder = paper_grain.decoder
    assert [len(decoder.scales[str(r)].blocks) for r in (16, 32, 64, 128, 256, 512, 1024)] == [3, 3, 3, 2, 1, 1, 1]
    assert decoder.scales["512"].blocks[0].num_dense_blocks == 1
    assert decoder.scales["512"].blocks[0].rdb1.num_convs == 4
    assert decoder.scales["256"].blocks[0].rdb1.num_convs == 5
    assert len(paper_grain.encoder.down) == 6 and len(paper_grain.encoder.trunk) == 10


def test_patch_discriminator_count():
    with torch.device("meta"):
        assert count(PatchDiscriminator()) == 4_693_697


@pytest.mark.parametrize("name", ["paper-1024-lr32", "paper-1024-lr64", "paper-1024-lr128", "cat-256-lr16"])
def test_other_presets_build(name):
    config = get_preset(name)
    with torch.device("meta"):
        grain = GRAIN(config)
    assert grain.latent_codes.num_ws == config.num_ws
    assert tuple(int(r) for r in grain.decoder.scales) == config.decoder_resolutions
