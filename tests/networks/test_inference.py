"""The inference path (grain_pl.networks.inference) against the modules' own forward: every switch, strips."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grain_pl.networks import GRAIN, get_preset, inference
from grain_pl.networks.inference import DecodeOptions, conv_of_upsampled

# Every fast switch, alone and together; strips of 8 rows from 8 px on, so that the tiny presets are cut.
VARIANTS = {
    "default": DecodeOptions(),
    "strips-everywhere": DecodeOptions(strip_rows=8, strip_min_size=8),
    "strips-16": DecodeOptions(strip_rows=16, strip_min_size=8),
    "nchw": DecodeOptions(channels_last=False, strip_rows=8, strip_min_size=8),
    "no-polyphase": DecodeOptions(polyphase=False, strip_rows=8, strip_min_size=8),
    "split-dense": DecodeOptions(concat_dense=False, strip_rows=8, strip_min_size=8),
    "whole-maps": DecodeOptions(strip_rows=None),
}


def scaled_grain(preset: str, **overrides) -> GRAIN:
    """A random network whose output is not near zero (the default init's is ~0.05), so a wrong pixel shows."""
    torch.manual_seed(0)
    grain = GRAIN(get_preset(preset, **overrides)).eval()
    with torch.no_grad():
        for head in (grain.decoder.to_hr[-1], grain.fusion.head[-1]):
            head.weight.mul_(20)
    return grain


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("preset", ["tiny-64-lr8", "tiny-64-lr4", "demo-64-lr8", "demo-64-lr16"])
def test_matches_the_modules_forward(preset, variant):
    grain = scaled_grain(preset)
    lr = torch.rand(2, 3, grain.config.lr_size, grain.config.lr_size) * 2 - 1
    with torch.no_grad():
        grain.decode_options = DecodeOptions.baseline()
        expected = grain.decode(lr, return_features=True)
        grain.decode_options = VARIANTS[variant]
        got = grain.decode(lr, return_features=True)
    assert expected.hr_out.abs().max() > 0.3  # far above atol: a wrong pixel shows
    torch.testing.assert_close(got.hr_out, expected.hr_out, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.y_inv, expected.y_inv, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.w_plus, expected.w_plus, rtol=0, atol=1e-5)
    for resolution, feature in expected.decoder_features.items():
        torch.testing.assert_close(got.decoder_features[resolution], feature, rtol=0, atol=1e-5)
    assert got.hr_out.is_contiguous() and got.y_inv.is_contiguous()


def test_bicubic_residual_parameterisation():
    grain = scaled_grain("tiny-64-lr8", hr_parameterisation="bicubic_residual", lr_parameterisation="bicubic_residual")
    with torch.no_grad():
        for head in (grain.decoder.to_hr[-1], grain.fusion.head[-1]):
            torch.nn.init.normal_(head.weight, std=0.1)
        lr = torch.rand(1, 3, 8, 8) * 2 - 1
        grain.decode_options = DecodeOptions.baseline()
        expected = grain.decode(lr).hr_out
        grain.decode_options = DecodeOptions(strip_rows=8, strip_min_size=8)
        torch.testing.assert_close(grain.decode(lr).hr_out, expected, rtol=0, atol=1e-5)


def test_autograd_takes_the_modules_forward():
    grain = scaled_grain("tiny-32-lr8")
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    out = grain.decode(lr)  # autograd on: the modules' forward, whatever decode_options say
    out.hr_out.mean().backward()
    assert grain.fusion.head[0].weight.grad is not None
    grain.decode_options = DecodeOptions.baseline()
    assert torch.equal(grain.decode(lr).hr_out, out.hr_out)


@pytest.mark.parametrize("factor", [2, 4, 8])
@pytest.mark.parametrize("channels_last", [True, False])
def test_conv_of_upsampled_is_the_conv_of_the_upscale(factor, channels_last):
    torch.manual_seed(factor)
    x = torch.randn(2, 5, 6, 7)
    weight = torch.randn(4, 5, 3, 3)
    options = DecodeOptions(channels_last=channels_last)
    expected = F.conv2d(F.interpolate(x, scale_factor=factor, mode="nearest"), weight, padding=1)
    torch.testing.assert_close(conv_of_upsampled(x, weight, factor, options), expected, rtol=1e-5, atol=1e-5)
    base = torch.randn_like(expected)
    summed = conv_of_upsampled(x, weight, factor, options, out=base.clone())
    torch.testing.assert_close(summed, base + expected, rtol=1e-5, atol=1e-5)


def test_bad_options_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="strip_rows must be a multiple of 8"):
        DecodeOptions(strip_rows=12)
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ValueError, match="native bf16"):
        DecodeOptions(bf16=True)


@pytest.mark.skipif(not inference.cpu_has_native_bf16(), reason="no native bf16 on this CPU")
def test_bf16_is_close_but_opt_in():
    grain = scaled_grain("tiny-64-lr8")
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        expected = grain.decode(lr).hr_out
        grain.decode_options = DecodeOptions(bf16=True)
        got = grain.decode(lr).hr_out
    assert got.dtype == torch.float32
    assert not torch.equal(got, expected)
    torch.testing.assert_close(got, expected, rtol=0, atol=0.1)
