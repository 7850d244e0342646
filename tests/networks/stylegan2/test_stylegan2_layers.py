"""Equalized learning rate, modulation/demodulation and the blur pads of the StyleGAN2 layers."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from grain_pl.networks.stylegan2 import fused_leaky_relu, make_kernel, stylegan2_channels, upfirdn2d
from grain_pl.networks.stylegan2.layers import (
    Blur,
    ConvLayer,
    EqualConv2d,
    EqualLinear,
    ModulatedConv2d,
    NoiseInjection,
    PixelNorm,
    ResBlock,
    StyledConv,
    ToRGB,
    Upsample,
)


def test_equal_linear_scales_weight_and_bias_at_run_time():
    layer = EqualLinear(6, 4, bias_init=0.5, lr_mul=0.01)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(3, 6)
    scale = 0.01 / math.sqrt(6)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight * scale, layer.bias * 0.01))

    activated = EqualLinear(6, 4, lr_mul=0.01, activation="fused_lrelu")
    expected = fused_leaky_relu(F.linear(x, activated.weight * scale), activated.bias * 0.01)
    torch.testing.assert_close(activated(x), expected)


def test_equal_linear_initialisation():
    torch.manual_seed(0)
    layer = EqualLinear(256, 512, bias_init=1, lr_mul=0.01)
    assert torch.equal(layer.bias, torch.ones(512))
    # Stored weights are N(0, 1) / lr_mul, so that weight * lr_mul / sqrt(in) has std 1/sqrt(in).
    unit_std = (layer.weight * layer.lr_mul).std().item()
    assert abs(unit_std - 1) < 0.02


def test_equal_conv2d():
    conv = EqualConv2d(3, 5, 3, stride=2, padding=1)
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(2, 3, 8, 8)
    expected = F.conv2d(x, conv.weight / math.sqrt(27), conv.bias, stride=2, padding=1)
    torch.testing.assert_close(conv(x), expected)
    assert EqualConv2d(3, 5, 1, bias=False).bias is None


def test_pixel_norm():
    x = torch.randn(4, 16)
    out = PixelNorm()(x)
    torch.testing.assert_close(out.pow(2).mean(1), torch.ones(4), rtol=1e-5, atol=1e-5)


def test_rosinality_pads_and_kernel_scales():
    taps = [1, 3, 3, 1]
    assert Upsample(taps).pad == (2, 1)
    assert torch.equal(Upsample(taps).kernel, make_kernel(taps) * 4)
    upsampling_conv = ModulatedConv2d(4, 4, 3, 8, upsample=True)
    assert upsampling_conv.blur.pad == (1, 1)
    assert torch.equal(upsampling_conv.blur.kernel, make_kernel(taps) * 4)
    assert ConvLayer(4, 4, 3, downsample=True)[0].pad == (2, 2)
    assert ConvLayer(4, 4, 1, downsample=True, activate=False, bias=False)[0].pad == (1, 1)
    assert torch.equal(ConvLayer(4, 4, 3, downsample=True)[0].kernel, make_kernel(taps))
    blur = Blur(taps, pad=(1, 1), upsample_factor=2)
    assert torch.equal(blur.fresh_kernel(device="cpu"), blur.kernel)


def per_sample_modulated_conv(conv: ModulatedConv2d, x, w):
    """One sample at a time, without the grouped-conv batching."""
    outs = []
    for b in range(x.shape[0]):
        style = conv.modulation(w[b:b + 1])[0]  # (in,)
        weight = conv.scale * conv.weight[0] * style[None, :, None, None]  # (out, in, k, k)
        if conv.demodulate:
            weight = weight / torch.sqrt(weight.pow(2).sum([1, 2, 3], keepdim=True) + 1e-8)
        if conv.upsample:
            out = F.conv_transpose2d(x[b:b + 1], weight.transpose(0, 1), stride=2)
            out = upfirdn2d(out, make_kernel([1, 3, 3, 1]) * 4, pad=(1, 1))
        else:
            out = F.conv2d(x[b:b + 1], weight, padding=conv.kernel_size // 2)
        outs.append(out)
    return torch.cat(outs)


def test_modulated_conv_matches_per_sample_computation():
    x = torch.randn(3, 4, 6, 6)
    w = torch.randn(3, 8)
    for kwargs in (dict(kernel_size=3), dict(kernel_size=3, upsample=True), dict(kernel_size=1, demodulate=False)):
        conv = ModulatedConv2d(4, 5, style_dim=8, **kwargs)
        with torch.no_grad():
            conv.modulation.bias.normal_()
        out = conv(x, w)
        expected_size = 12 if kwargs.get("upsample") else 6
        assert out.shape == (3, 5, expected_size, expected_size)
        torch.testing.assert_close(out, per_sample_modulated_conv(conv, x, w), rtol=1e-4, atol=1e-5)


def test_styled_conv_noise_and_torgb():
    conv = StyledConv(4, 6, 3, 8, upsample=True)
    assert [name for name, _ in conv.noise.named_parameters()] == ["weight"]
    assert conv.noise.weight.shape == (1,)
    x, w = torch.randn(2, 4, 4, 4), torch.randn(2, 8)
    noise = torch.randn(2, 1, 8, 8)
    # The noise weight starts at zero, so noise has no effect until it is trained.
    torch.testing.assert_close(conv(x, w, noise), conv(x, w, None))
    with torch.no_grad():
        conv.noise.weight.fill_(0.3)
    assert not torch.allclose(conv(x, w, noise), conv(x, w, None))
    torch.testing.assert_close(NoiseInjection()(x, None), x)

    to_rgb = ToRGB(6, 8)
    assert to_rgb.bias.shape == (1, 3, 1, 1)
    rgb = to_rgb(torch.randn(2, 6, 8, 8), w, skip=torch.randn(2, 3, 4, 4))
    assert rgb.shape == (2, 3, 8, 8)


def test_res_block_halves_resolution():
    block = ResBlock(4, 6)
    x = torch.randn(2, 4, 8, 8)
    out = block(x)
    assert out.shape == (2, 6, 4, 4)
    torch.testing.assert_close(out, (block.conv2(block.conv1(x)) + block.skip(x)) / math.sqrt(2))
    assert sorted(block.state_dict()) == sorted([
        "conv1.0.weight", "conv1.1.bias", "conv2.0.kernel", "conv2.1.weight", "conv2.2.bias", "skip.0.kernel",
        "skip.1.weight"])


def test_channel_table():
    assert stylegan2_channels(1024) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128, 512: 64,
                                        1024: 32}
    assert stylegan2_channels(256, channel_multiplier=1) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256,
                                                             128: 128, 256: 64}
    assert set(stylegan2_channels(32, channel_max=16).values()) == {16}


def test_unfused_modulated_conv_equals_the_grouped_one():
    """`fused=False` (the form ONNX export traces: no per-sample weights, so no batch-sized conv groups) computes the
    same as the grouped conv, for every kind of modulated conv the generator has."""
    x = torch.randn(3, 4, 6, 6)
    w = torch.randn(3, 8)
    for kwargs in (dict(kernel_size=3), dict(kernel_size=3, upsample=True), dict(kernel_size=1, demodulate=False)):
        conv = ModulatedConv2d(4, 5, style_dim=8, **kwargs)
        with torch.no_grad():
            conv.modulation.bias.normal_()
        fused = conv(x, w)
        conv.fused = False
        unfused = conv(x, w)
        assert torch.equal(unfused, conv._forward_unfused(x, w))  # the switch chose it
        torch.testing.assert_close(unfused, fused, rtol=1e-5, atol=1e-5)
