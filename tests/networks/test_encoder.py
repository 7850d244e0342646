"""The encoder's LR parameterisation: "free" (the paper) and the opt-in "bicubic_residual"."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grain_pl.evaluation import decode_image_bytes, resize_baseline
from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.networks import GRAIN, GrainConfig, get_preset
from grain_pl.networks.encoder import Encoder, bicubic_thumbnail
from grain_pl.networks.inference import DecodeOptions
from grain_pl.weights.grain_checkpoint import load_grain, read_grain_config, save_grain

PRESET = "tiny-64-lr8"


def _residual_config() -> GrainConfig:
    return get_preset(PRESET, lr_parameterisation="bicubic_residual")


def _hr_levels(seed: int = 0, batch: int = 4, size: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=generator)


def test_free_is_the_default_and_the_encoder_output_is_the_to_lr_head() -> None:
    assert GrainConfig().lr_parameterisation == "free"
    assert all(get_preset(name).lr_parameterisation == "free" for name in ("paper-1024-lr16", "demo-64-lr8"))
    torch.manual_seed(0)
    encoder = Encoder(num_downsamples=3, channels=8, growth_channels=4, num_blocks=1).eval()
    hr = from_uint8(_hr_levels())
    with torch.no_grad():
        x = encoder._downsample(hr)
        head = encoder.to_lr(x + encoder.trunk_conv(encoder.trunk(x)))
        assert torch.equal(encoder(hr), head)  # nothing added: the paper's encoder, bit for bit


def test_free_builds_the_same_weights_and_outputs_as_the_preset() -> None:
    hr = from_uint8(_hr_levels())
    torch.manual_seed(3)
    default = GRAIN(PRESET).eval()
    torch.manual_seed(3)
    explicit = GRAIN(get_preset(PRESET, lr_parameterisation="free", hr_parameterisation="free")).eval()
    for (name, a), b in zip(default.state_dict().items(), explicit.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(default(hr).hr_out, explicit(hr).hr_out)


def test_zero_residual_stores_exactly_the_bicubic_baselines_thumbnail() -> None:
    grain = GRAIN(_residual_config()).eval()
    hr_levels = _hr_levels(seed=1)
    with torch.no_grad():
        lr_levels = to_uint8(grain.encode(from_uint8(hr_levels)))
    # what `grain evaluate`'s bicubic baseline stores: its LR is the PNG's content, decoded back
    reference = torch.stack([decode_image_bytes(resize_baseline(image, 8, "bicubic").payload) for image in hr_levels])
    assert torch.equal(lr_levels, reference)


def test_the_residual_is_added_to_the_thumbnail() -> None:
    grain = GRAIN(_residual_config()).eval()
    with torch.no_grad():
        grain.encoder.to_lr[-1].bias.fill_(0.1)
    hr = from_uint8(_hr_levels())
    with torch.no_grad():
        lr_float = grain.encoder(hr)
    torch.testing.assert_close(lr_float, bicubic_thumbnail(hr, 8) + 0.1)


def test_the_residual_head_learns_from_zero() -> None:
    grain = GRAIN(_residual_config()).train()
    head = grain.encoder.to_lr[-1]
    assert not head.weight.any() and not head.bias.any()
    hr = from_uint8(_hr_levels())
    F.mse_loss(grain.encode(hr), torch.zeros(4, 3, 8, 8)).backward()
    assert head.weight.grad.abs().sum() > 0 and head.bias.grad.abs().sum() > 0


def test_state_dicts_are_unchanged_so_checkpoints_load_both_ways() -> None:
    free, residual = GRAIN(PRESET), GRAIN(_residual_config())
    free_state, residual_state = free.state_dict(), residual.state_dict()
    assert list(free_state) == list(residual_state)
    assert all(free_state[key].shape == residual_state[key].shape for key in free_state)
    residual.load_state_dict(free_state)  # strict
    free.load_state_dict(residual_state)


def test_the_option_travels_in_the_model_file(tmp_path) -> None:
    grain = GRAIN(_residual_config()).eval()
    path = tmp_path / "model.safetensors"
    save_grain(grain, path)
    assert read_grain_config(path).lr_parameterisation == "bicubic_residual"
    loaded = load_grain(path).eval()
    hr = from_uint8(_hr_levels())
    with torch.no_grad():
        assert torch.equal(loaded.encode(hr), grain.encode(hr))


def test_thumbnail_is_torchs_antialiased_bicubic() -> None:
    hr = torch.rand(2, 3, 64, 64) * 2 - 1
    expected = F.interpolate(hr, size=(8, 8), mode="bicubic", align_corners=False, antialias=True)
    assert torch.equal(bicubic_thumbnail(hr, 8), expected)


def test_unknown_parameterisation_is_refused() -> None:
    with pytest.raises(ValueError, match="lr_parameterisation"):
        get_preset(PRESET, lr_parameterisation="bicubic")
    with pytest.raises(ValueError, match="lr_parameterisation"):
        Encoder(3, lr_parameterisation="residual")


# ----- hr_parameterisation: y_inv a correction of the LR's bicubic upscale, the final image one of y_inv -----


def _both_residual() -> GrainConfig:
    return get_preset(PRESET, lr_parameterisation="bicubic_residual", hr_parameterisation="bicubic_residual")


def test_free_hr_is_the_default_and_the_heads_outputs_are_returned_as_they_are() -> None:
    assert GrainConfig().hr_parameterisation == "free"
    assert all(get_preset(name).hr_parameterisation == "free" for name in ("paper-1024-lr16", "demo-64-lr8"))
    grain = GRAIN(PRESET, decode_options=DecodeOptions.baseline()).eval()  # the modules' forward: bitwise equal
    lr = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        out = grain.decode(lr)
        y_inv, features = grain.decoder(lr)
        prior = grain.generator.synthesize(out.w_plus, noise_mode="const", return_features=True)
        assert torch.equal(out.y_inv, y_inv)
        assert torch.equal(out.hr_out, grain.fusion(features, prior.features))


def test_untrained_hr_residual_decodes_as_the_bicubic_baseline() -> None:
    grain = GRAIN(_both_residual()).eval()
    hr_levels = _hr_levels(seed=2)
    with torch.no_grad():
        lr = from_uint8(to_uint8(grain.encode(from_uint8(hr_levels))))
        out = grain.decode(lr)
    expected = F.interpolate(lr, size=(64, 64), mode="bicubic", align_corners=False, antialias=True)
    assert torch.equal(out.hr_out, expected) and torch.equal(out.y_inv, expected)
    # the bicubic baseline of `grain evaluate` upscales 0..255 levels: the same up to float rounding at .5
    baseline = torch.stack([resize_baseline(image, 8, "bicubic").output for image in hr_levels])
    difference = (to_uint8(out.hr_out).int() - baseline.int()).abs()
    assert difference.max() <= 1 and (difference > 0).float().mean() < 1e-3


def test_hr_residual_y_inv_refines_the_upscale_and_the_fusion_refines_y_inv() -> None:
    torch.manual_seed(0)
    grain = GRAIN(get_preset(PRESET, hr_parameterisation="bicubic_residual")).eval()
    with torch.no_grad():
        grain.decoder.to_hr[-1].bias.fill_(0.1)
        grain.fusion.head[-1].bias.fill_(-0.2)
    lr = torch.rand(2, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        out = grain.decode(lr)
        y_inv, features = grain.decoder(lr)
        prior = grain.generator.synthesize(out.w_plus, noise_mode="const", return_features=True)
        hr_out = grain.fusion(features, prior.features)
    def upscale(image: torch.Tensor) -> torch.Tensor:
        return F.interpolate(image, size=(64, 64), mode="bicubic", align_corners=False, antialias=True)

    torch.testing.assert_close(out.y_inv, y_inv + upscale(lr))
    torch.testing.assert_close(out.hr_out, hr_out + y_inv + upscale(lr))  # the fusion refines y_inv
    hr = from_uint8(_hr_levels())
    with torch.no_grad():
        stage1_lr = grain.encode(hr)
        torch.testing.assert_close(grain.rescale(hr).y_inv, grain.decoder(stage1_lr)[0] + upscale(stage1_lr))


def test_hr_residual_keeps_the_state_dict() -> None:
    free, residual = GRAIN(PRESET), GRAIN(_both_residual())
    assert {k: v.shape for k, v in free.state_dict().items()} == {k: v.shape for k, v in residual.state_dict().items()}
    residual.load_state_dict(free.state_dict())


def test_unknown_hr_parameterisation_is_refused() -> None:
    with pytest.raises(ValueError, match="hr_parameterisation"):
        get_preset(PRESET, hr_parameterisation="bilinear_residual")
