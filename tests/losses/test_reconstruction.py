"""Pixel-space losses: the HR MSE and the LR guidance MSE with its official (aliased) bilinear target."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grain_pl.losses import LRGuidanceLoss, downsample, pixel_loss
from grain_pl.networks.encoder import bicubic_thumbnail


def test_bilinear_64x_is_the_mean_of_each_blocks_central_2x2() -> None:
    # docs/method.md §2.2: F.interpolate(bilinear, no antialias) from 1024 to 16 samples only pixels 31 and 32 of
    # every 64-pixel block, since output pixel i is centred on input coordinate 64 i + 31.5.
    hr = torch.randn(2, 3, 1024, 1024)
    blocks = hr.reshape(2, 3, 16, 64, 16, 64)
    central_mean = blocks[:, :, :, 31:33, :, 31:33].mean(dim=(3, 5))
    torch.testing.assert_close(downsample(hr, 16, "bilinear"), central_mean, rtol=0, atol=1e-6)


def _aliasing_checkerboard(side: int) -> torch.Tensor:
    """+-1 in 2x2 tiles placed so that pixels 64 i + 31 and 64 i + 32 always share the sign +1."""
    index = torch.arange(side)
    signs = 1.0 - 2.0 * (((index + 1) // 2) % 2).float()
    return (signs[:, None] * signs[None, :]).expand(1, 3, side, side)


def test_antialias_removes_what_bilinear_aliases() -> None:
    checkerboard = _aliasing_checkerboard(256)
    assert checkerboard.mean().abs() < 1e-6
    aliased = downsample(checkerboard, 4, "bilinear")
    filtered = downsample(checkerboard, 4, "antialias")
    assert aliased.shape == filtered.shape == (1, 3, 4, 4)
    # Bilinear point-samples the +1 tiles; a low-pass downscale of a zero-mean fine pattern is close to 0.
    torch.testing.assert_close(aliased, torch.ones_like(aliased))
    assert filtered.abs().max() < 0.1


def test_antialias_at_the_same_size_is_the_identity() -> None:
    image = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(downsample(image, 16, "antialias"), image)


def test_lr_guidance_loss_against_the_central_pixels() -> None:
    hr = torch.randn(1, 3, 1024, 1024)
    target = hr.reshape(1, 3, 16, 64, 16, 64)[:, :, :, 31:33, :, 31:33].mean(dim=(3, 5))
    offset = torch.randn(1, 3, 16, 16)
    lr = target + offset
    loss = LRGuidanceLoss("bilinear")(lr, hr)
    torch.testing.assert_close(loss, offset.pow(2).mean(), rtol=1e-4, atol=1e-6)
    assert LRGuidanceLoss()(target, hr) < 1e-10


def test_lr_guidance_antialias_target_differs_on_the_checkerboard() -> None:
    checkerboard = _aliasing_checkerboard(256)
    lr = torch.ones(1, 3, 4, 4)
    assert LRGuidanceLoss("bilinear")(lr, checkerboard) < 1e-10
    assert LRGuidanceLoss("antialias")(lr, checkerboard) > 0.8


def test_bicubic_target_is_the_reference_thumbnail() -> None:
    # The bicubic baseline's downscale (torch's antialiased bicubic), the same function the encoder's
    # "bicubic_residual" option starts from, so a thumbnail LR costs nothing and lr_psnr measures this loss.
    hr = torch.rand(2, 3, 64, 64) * 2 - 1
    expected = F.interpolate(hr, size=(8, 8), mode="bicubic", align_corners=False, antialias=True)
    assert torch.equal(downsample(hr, 8, "bicubic"), expected)
    assert LRGuidanceLoss("bicubic")(bicubic_thumbnail(hr, 8), hr) == 0
    assert LRGuidanceLoss("bicubic")(downsample(hr, 8, "antialias"), hr) > 0
    checkerboard = _aliasing_checkerboard(256)
    assert downsample(checkerboard, 4, "bicubic").abs().max() < 0.1  # low-passed, unlike the official target


def test_lr_guidance_loss_gradient_reaches_the_lr() -> None:
    lr = torch.zeros(2, 3, 4, 4, requires_grad=True)
    LRGuidanceLoss()(lr, torch.ones(2, 3, 32, 32)).backward()
    torch.testing.assert_close(lr.grad, torch.full_like(lr, -2.0 / lr.numel()))


def test_pixel_loss_is_the_mean_squared_error_over_all_elements() -> None:
    output = torch.zeros(2, 3, 8, 8)
    target = torch.full((2, 3, 8, 8), 2.0)
    target[0, 0, 0, 0] = 0.0
    expected = 4.0 * (output.numel() - 1) / output.numel()
    torch.testing.assert_close(pixel_loss(output, target), torch.tensor(expected))
    random_output, random_target = torch.randn(3, 3, 5, 5), torch.randn(3, 3, 5, 5)
    torch.testing.assert_close(pixel_loss(random_output, random_target), F.mse_loss(random_output, random_target))


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError, match="mode"):
        LRGuidanceLoss("nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="mode"):
        downsample(torch.zeros(1, 3, 8, 8), 4, "area")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shapes differ"):
        pixel_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5))
    with pytest.raises(ValueError, match="LR"):
        LRGuidanceLoss()(torch.zeros(1, 3, 4, 4), torch.zeros(2, 3, 16, 16))
