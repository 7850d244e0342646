"""Pixel-space terms of the GRAIN objective: HR reconstruction MSE and the LR guidance MSE (docs/method.md §2.2).

The LR guidance term pulls the encoder's 16x16 LR towards a downscaled copy of the HR image so that the LR
stays a viewable thumbnail. The official target is `F.interpolate(bilinear)` without antialiasing, which at
64x only averages the central 2x2 pixels of each 64x64 block (an aliased point sample, docs/method.md §6.17);
`mode="antialias"` offers a low-passed target instead (kornia: Gaussian blur, then bilinear), and
`mode="bicubic"` the reference thumbnail itself (`bicubic_thumbnail`: torch's antialiased bicubic, the bicubic
baseline's downscale and the base of the encoder's "bicubic_residual" option), so the loss measures exactly the
distance that `lr_psnr` reports.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from grain_pl.networks.encoder import bicubic_thumbnail

DownsampleMode = Literal["bilinear", "antialias", "bicubic"]
_DOWNSAMPLE_MODES: tuple[str, ...] = ("bilinear", "antialias", "bicubic")


def downsample(image: torch.Tensor, size: int, mode: DownsampleMode = "bilinear") -> torch.Tensor:
    """Resize (B, C, H, W) images to (B, C, size, size).

    "bilinear" is the official target (align_corners=False, no antialias); "antialias" is kornia's resize,
    which Gaussian-blurs (sigma = (factor - 1) / 2) before the same bilinear sampling; "bicubic" is the
    reference thumbnail (`grain_pl.networks.encoder.bicubic_thumbnail`).
    """
    if mode not in _DOWNSAMPLE_MODES:
        raise ValueError(f"downsample mode must be one of {_DOWNSAMPLE_MODES}, got {mode!r}")
    if image.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) image, got shape {tuple(image.shape)}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    if mode == "bilinear":
        return F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    if mode == "bicubic":
        return bicubic_thumbnail(image, size)

    from kornia.geometry.transform import resize  # deferred: only this mode needs kornia

    return resize(image, (size, size), interpolation="bilinear", align_corners=False, antialias=True)


def pixel_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The HR L2 term: MSE averaged over every element (batch, channels and pixels)."""
    if output.shape != target.shape:
        raise ValueError(f"output and target shapes differ: {tuple(output.shape)} vs {tuple(target.shape)}")
    return F.mse_loss(output, target)


class LRGuidanceLoss(nn.Module):
    """MSE between the produced LR and the HR image downscaled to the LR's size.

    Args:
        mode: how the HR target is downscaled, see `downsample` ("bilinear" = official).
    """

    def __init__(self, mode: DownsampleMode = "bilinear") -> None:
        super().__init__()
        if mode not in _DOWNSAMPLE_MODES:
            raise ValueError(f"LRGuidanceLoss mode must be one of {_DOWNSAMPLE_MODES}, got {mode!r}")
        self.mode = mode

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """`lr` (B, C, h, h) produced by the encoder, `hr` (B, C, H, W) the ground truth; returns a scalar."""
        if lr.ndim != 4 or hr.ndim != 4 or lr.shape[:2] != hr.shape[:2] or lr.shape[-2] != lr.shape[-1]:
            raise ValueError(f"expected a square (B, C, h, h) LR and a (B, C, H, W) HR with the same B and C, "
                             f"got {tuple(lr.shape)} and {tuple(hr.shape)}")
        return F.mse_loss(lr, downsample(hr, lr.shape[-1], self.mode))

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
