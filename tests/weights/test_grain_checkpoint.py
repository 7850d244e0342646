"""grain_pl's own model file and loading a rosinality prior into a GRAIN."""

from __future__ import annotations

import pytest
import torch

from grain_pl.networks import GRAIN
from grain_pl.networks.stylegan2 import StyleGAN2Generator
from grain_pl.weights.grain_checkpoint import load_grain, load_prior_into, read_grain_config, save_grain
from grain_pl.weights.io import CheckpointError
from grain_pl.weights.stylegan2_rosinality import export_rosinality


def tiny_prior(config) -> tuple[StyleGAN2Generator, torch.Tensor]:
    generator = StyleGAN2Generator(config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                   channel_multiplier=config.channel_multiplier,
                                   channel_max=config.generator_channel_max)
    return generator, torch.randn(config.style_dim)


def test_every_buffer_is_saved(tiny_config):
    grain = GRAIN(tiny_config)
    assert set(dict(grain.named_buffers())) <= set(grain.state_dict())


def test_model_file_round_trip_decodes_identically(tiny_config, tmp_path):
    grain = GRAIN(tiny_config).eval()
    path = save_grain(grain, tmp_path / "model.safetensors")
    loaded = load_grain(path)
    assert read_grain_config(path) == tiny_config
    lr = torch.rand(1, 3, tiny_config.lr_size, tiny_config.lr_size) * 2 - 1
    with torch.no_grad():
        assert torch.equal(grain.decode(lr).hr_out, loaded.decode(lr).hr_out)


def test_model_file_is_never_overwritten_silently(tiny_config, tmp_path):
    path = save_grain(GRAIN(tiny_config), tmp_path / "model.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="model.safetensors: already exists"):
        save_grain(GRAIN(tiny_config), path)
    assert path.read_bytes() == before


def test_a_foreign_file_is_not_a_model_file(tmp_path):
    path = tmp_path / "other.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(CheckpointError, match="other.safetensors"):
        load_grain(path)


def test_prior_file_loads_into_grain(tiny_config, tmp_path):
    generator, latent_avg = tiny_prior(tiny_config)
    path = export_rosinality(generator, None, latent_avg, tmp_path / "prior.pt")
    grain = GRAIN(tiny_config)
    assert load_prior_into(grain, path) is None
    for key, value in generator.state_dict().items():
        assert torch.equal(grain.generator.state_dict()[key], value), key
    assert torch.equal(grain.latent_codes.latent_avg, latent_avg)


def test_a_prior_of_another_size_is_refused(tiny_config, tmp_path):
    generator, latent_avg = tiny_prior(tiny_config.replace(hr_size=64, decoder_blocks=None))
    path = export_rosinality(generator, None, latent_avg, tmp_path / "prior64.pt")
    with pytest.raises(CheckpointError, match="prior64.pt"):
        load_prior_into(GRAIN(tiny_config), path)
