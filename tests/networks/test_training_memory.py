"""The training-memory levers (grain_pl.networks.training_memory) against the plain forward: values and gradients."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from grain_pl.networks import GRAIN, get_preset
from grain_pl.networks.training_memory import (
    MemoryOptions,
    gated_conv_over_parts,
    recompute_in_strips,
    upsampled_conv,
)

BASELINE = MemoryOptions.baseline()
# Each lever alone, all together, and strips small enough to cut the tiny presets' maps.
VARIANTS = {
    "default": MemoryOptions(),
    "strips-8": MemoryOptions(head_strips=8),
    "strips-16-no-polyphase": MemoryOptions(head_strips=16, polyphase=False),
    "fusion-parts": dataclasses.replace(BASELINE, fusion_parts=True),
    "head-strips": dataclasses.replace(BASELINE, head_strips=8),
    "generator": dataclasses.replace(BASELINE, generator_checkpoint_size=16),
    "encoder": dataclasses.replace(BASELINE, encoder_checkpoint=True),
    "decoder": dataclasses.replace(BASELINE, decoder_checkpoint_size=16),
    "everything": MemoryOptions(head_strips=8, generator_checkpoint_size=8, decoder_checkpoint_size=8),
}


def scaled_grain(preset: str, options: MemoryOptions) -> GRAIN:
    """A random network whose output is not near zero, so a wrong pixel or gradient shows."""
    torch.manual_seed(0)
    grain = GRAIN(get_preset(preset), memory_options=options, prior_noise="const")
    with torch.no_grad():
        for head in (grain.decoder.to_hr[-1], grain.fusion.head[-1]):
            head.weight.mul_(20)
    return grain.train()


def step(grain: GRAIN, hr: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    grain.zero_grad(set_to_none=True)
    out = grain(hr)
    loss = (out.hr_out - hr).pow(2).mean() + out.hr_out.abs().mean() + (out.lr - 0.3).pow(2).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in grain.named_parameters() if p.grad is not None}
    return out.hr_out.detach(), grads


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("preset", ["tiny-64-lr8", "demo-64-lr8"])
def test_values_and_gradients_match_the_plain_forward(preset, variant):
    hr = torch.rand(2, 3, 64, 64) * 2 - 1
    grain = scaled_grain(preset, BASELINE)
    grain.quantize.eval()  # no fresh quantisation noise: the two runs see the same LR
    expected, expected_grads = step(grain, hr)
    grain.set_memory_options(VARIANTS[variant])
    got, grads = step(grain, hr)
    assert expected.abs().max() > 0.5
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert grads.keys() == expected_grads.keys()
    for name, grad in expected_grads.items():
        scale = max(1.0, grad.abs().max().item())
        torch.testing.assert_close(grads[name], grad, rtol=0, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("factor", [2, 4])
def test_upsampled_conv_is_the_conv_of_the_upscale_with_its_gradients(factor):
    x = torch.randn(2, 5, 6, 7, requires_grad=True)
    weight = torch.randn(4, 5, 3, 3, requires_grad=True)
    grad_out = torch.randn(2, 4, 6 * factor, 7 * factor)
    literal = F.conv2d(F.interpolate(x, scale_factor=factor, mode="nearest"), weight, padding=1)
    expected = torch.autograd.grad(literal, [x, weight], grad_out)
    got = upsampled_conv(x, weight, factor)
    torch.testing.assert_close(got, literal, rtol=0, atol=1e-5)
    for a, b in zip(torch.autograd.grad(got, [x, weight], grad_out), expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_gated_conv_over_parts_is_the_conv_of_the_gated_concatenation():
    conv = torch.nn.Conv2d(7, 4, 3, padding=1)
    parts = [torch.randn(3, 4, 9, 9, requires_grad=True), torch.randn(3, 3, 9, 9, requires_grad=True)]
    gate = torch.rand(3, 7, 1, 1, requires_grad=True)
    literal = conv(torch.cat(parts, dim=1) * gate)
    got = gated_conv_over_parts(conv, parts, gate)
    torch.testing.assert_close(got, literal, rtol=0, atol=1e-5)
    grad_out = torch.randn_like(literal)
    inputs = [*parts, gate, conv.weight, conv.bias]
    for a, b in zip(torch.autograd.grad(got, inputs, grad_out), torch.autograd.grad(literal, inputs, grad_out)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_strips_keep_only_their_inputs_for_the_backward():
    """Nothing of the function's insides is saved; its gradients equal those of the plain call."""
    convs = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.LeakyReLU(0.2),
                                torch.nn.Conv2d(16, 2, 3, padding=1))
    x = torch.randn(1, 3, 40, 12, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = recompute_in_strips(convs, [x], [1], list(convs.parameters()), 40, halo=2, rows=8)
    assert sum(saved) == x.numel()  # the input only, no 16-channel map
    grads = torch.autograd.grad(out.square().sum(), [x, *convs.parameters()])
    plain = convs(x)
    torch.testing.assert_close(out, plain, rtol=0, atol=1e-6)
    for a, b in zip(grads, torch.autograd.grad(plain.square().sum(), [x, *convs.parameters()])):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_bad_options_are_explained():
    with pytest.raises(ValueError, match="head_strips must be a multiple of 8"):
        MemoryOptions(head_strips=12)
    with pytest.raises(ValueError, match="generator_checkpoint_size must be a power of two"):
        MemoryOptions(generator_checkpoint_size=100)
