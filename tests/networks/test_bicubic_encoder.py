"""GrainConfig(encoder="bicubic"): the fixed antialiased bicubic downscale instead of the learned encoder (the paper's
"without invertible encoder" ablation), so the rest of GRAIN learns to upscale ordinary thumbnails."""

from __future__ import annotations

import pytest
import torch

from grain_pl.evaluation import decode_image_bytes, resize_baseline
from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.networks import GRAIN, GrainConfig, get_preset
from grain_pl.networks.encoder import BicubicEncoder, Encoder
from grain_pl.weights.grain_checkpoint import load_grain, read_grain_config, save_grain

PRESET = "tiny-64-lr8"


def upscaler_config(**changes) -> GrainConfig:
    return get_preset(PRESET, encoder="bicubic", **changes)


def hr_levels(seed: int = 0, batch: int = 6, size: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)


def test_learned_is_the_default() -> None:
    assert GrainConfig().encoder == "learned"
    assert isinstance(GRAIN(PRESET).encoder, Encoder)


@pytest.mark.parametrize("training", [False, True])
def test_the_lr_is_the_bicubic_baselines_stored_thumbnail(training: bool) -> None:
    """In eval mode and in training (no rounding noise: the decoder trains on the thumbnails it will be given)."""
    grain = GRAIN(upscaler_config()).train(training)
    levels = hr_levels(seed=1)
    with torch.no_grad():
        lr = grain.encode(from_uint8(levels))
    # what `grain evaluate`'s bicubic baseline stores: its LR is the PNG's content, decoded back
    reference = torch.stack([decode_image_bytes(resize_baseline(image, 8, "bicubic").payload) for image in levels])
    assert torch.equal(to_uint8(lr), reference)
    assert torch.equal(lr, from_uint8(reference))  # exactly 8-bit values, as the quantizer's rounding gives
    assert lr.dtype == torch.float32


def test_the_thumbnail_is_made_from_the_8_bit_image() -> None:
    """An HR between levels is rounded to 8 bits first, as any saved image is before someone makes a thumbnail."""
    encoder = BicubicEncoder(8)
    levels = hr_levels(seed=2, batch=2)
    off_level = from_uint8(levels) + 0.3 / 127.5  # less than half a level off
    assert torch.equal(encoder(off_level), encoder(from_uint8(levels)))


def test_the_encoder_has_no_parameters_and_no_keys() -> None:
    learned, upscaler = GRAIN(PRESET), GRAIN(upscaler_config())
    assert isinstance(upscaler.encoder, BicubicEncoder)
    assert list(upscaler.encoder.parameters()) == [] and upscaler.encoder.state_dict() == {}
    learned_keys = {key for key in learned.state_dict() if not key.startswith("encoder.")}
    assert set(upscaler.state_dict()) == learned_keys  # every other part as the learned model's
    upscaler.load_state_dict({key: value for key, value in learned.state_dict().items() if key in learned_keys})


def test_the_decoder_trains_through_it() -> None:
    grain = GRAIN(upscaler_config()).train()
    out = grain.rescale(from_uint8(hr_levels(batch=2)))
    assert not out.lr.requires_grad
    out.y_inv.square().mean().backward()
    assert grain.decoder.to_hr[-1].weight.grad.abs().sum() > 0


def test_the_option_travels_in_the_model_file(tmp_path) -> None:
    torch.manual_seed(0)
    grain = GRAIN(upscaler_config(hr_parameterisation="bicubic_residual")).eval()
    path = save_grain(grain, tmp_path / "upscaler.safetensors")
    assert read_grain_config(path).encoder == "bicubic"
    loaded = load_grain(path)
    assert isinstance(loaded.encoder, BicubicEncoder)
    hr = from_uint8(hr_levels(batch=2))
    with torch.no_grad():
        assert torch.equal(loaded(hr).hr_out, grain(hr).hr_out)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match=r"encoder must be one of \('learned', 'bicubic'\), got 'bilinear'"):
        get_preset(PRESET, encoder="bilinear")
    with pytest.raises(ValueError, match="lr_parameterisation='bicubic_residual' describes the learned encoder"):
        upscaler_config(lr_parameterisation="bicubic_residual")
