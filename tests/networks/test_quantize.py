from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.networks.quantize import Quantize


def test_eval_output_is_exactly_8_bit_levels():
    quantize = Quantize().eval()
    lr_float = torch.randn(2, 3, 8, 8) * 1.5  # some values beyond [-1, 1]
    lr = quantize(lr_float)
    # every value is exactly from_uint8(k) for an integer level k: k / 127.5 - 1, i.e. (lr + 1) / 2 = k / 255
    levels = ((lr + 1) * 127.5).round()
    assert torch.equal(from_uint8(levels), lr)
    assert lr.min() >= -1 and lr.max() <= 1
    assert torch.equal(from_uint8(to_uint8(lr)), lr)
    assert torch.equal(to_uint8(lr), ((lr_float + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))


def test_png_round_trip_is_bit_exact():
    lr = Quantize().eval()(torch.rand(1, 3, 16, 16) * 2 - 1)
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(lr)[0].permute(1, 2, 0).numpy()).save(buffer, format="PNG")
    buffer.seek(0)
    pixels = torch.from_numpy(np.array(Image.open(buffer).convert("RGB"))).permute(2, 0, 1)[None]
    assert torch.equal(from_uint8(pixels), lr)


def test_training_adds_bounded_uniform_noise_without_rounding():
    quantize = Quantize().train()
    lr_float = torch.zeros(1, 3, 64, 64)
    lr = quantize(lr_float)
    noise_levels = (lr - lr_float) * 127.5
    assert noise_levels.abs().max() <= 0.5 + 1e-5
    assert noise_levels.std() > 0.2  # uniform(-0.5, 0.5) has std 0.289
    assert not torch.equal(noise_levels, noise_levels.round())


def test_training_clamps_to_the_8_bit_range():
    lr = Quantize().train()(torch.full((1, 3, 4, 4), 3.0))
    assert torch.equal(lr, torch.ones_like(lr))


def test_gradients_pass_straight_through_except_where_clamped():
    for quantize in (Quantize().train(), Quantize().eval()):
        lr_float = torch.tensor([[-0.3, 0.2, 0.7, 2.0]], requires_grad=True)
        quantize(lr_float).sum().backward()
        assert torch.allclose(lr_float.grad, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))


def test_noise_at_eval_reproduces_the_official_behaviour():
    quantize = Quantize(noise_at_eval=True).eval()
    lr_float = torch.zeros(1, 3, 16, 16)
    assert not torch.equal(quantize(lr_float), quantize(lr_float))
