"""Encoder: HR image -> float LR image (first half of the "Invertible Extreme Rescaling Module").

Strided 3x3 convs take the HR image down to the LR size; all heavy processing (the RRDB trunk) then runs
at the LR size, where it is cheap. There is no output activation: the quantizer clamps.

With `lr_parameterisation="bicubic_residual"` (an option; the paper's encoder is "free") the network's output is
a correction added to `bicubic_thumbnail(hr)`, the same antialiased bicubic downscale that the bicubic baseline
stores, so the LR starts as a faithful thumbnail and the LR-guidance loss only has to keep the correction small.

`BicubicEncoder` (`GrainConfig(encoder="bicubic")`) is no network at all: that thumbnail itself, rounded to 8 bits.
"""

from __future__ import annotations

import torch
from torch import nn

from grain_pl.io.images import LEVELS, from_uint8, to_uint8
from grain_pl.networks.blocks import RRDB, conv3x3, conv_lrelu, lrelu
from grain_pl.networks.checkpointing import maybe_checkpoint
from grain_pl.networks.config import LR_PARAMETERISATIONS
from grain_pl.networks.resize import antialiased_bicubic


def bicubic_thumbnail(image: torch.Tensor, size: int) -> torch.Tensor:
    """The reference thumbnail: (B, C, H, W) -> (B, C, size, size) by torch's antialiased bicubic resize (Pillow's
    Keys cubic, a = -0.5, stretched by the scale factor), the call `grain evaluate`'s bicubic baseline makes. It is
    linear, so applying it to [-1, 1] images equals applying it to 0..255 levels up to float rounding."""
    return antialiased_bicubic(image, size)


class Encoder(nn.Module):
    def __init__(self, num_downsamples: int, channels: int = 64, growth_channels: int = 32, num_blocks: int = 10,
                 image_channels: int = 3, lr_parameterisation: str = "free") -> None:
        super().__init__()
        if lr_parameterisation not in LR_PARAMETERISATIONS:
            raise ValueError(f"lr_parameterisation must be one of {LR_PARAMETERISATIONS}, got {lr_parameterisation!r}")
        self.lr_parameterisation = lr_parameterisation
        self.conv_first = conv3x3(image_channels, channels)
        # One stride-2 conv per halving; each a Sequential(conv, LReLU) so the keys read `down.{i}.0`.
        self.down = nn.ModuleList(nn.Sequential(*conv_lrelu(channels, channels, stride=2))
                                  for _ in range(num_downsamples))
        self.trunk = nn.Sequential(*(RRDB(channels, growth_channels) for _ in range(num_blocks)))
        self.trunk_conv = conv3x3(channels, channels)
        self.to_lr = nn.Sequential(conv3x3(channels, channels), lrelu(), conv3x3(channels, image_channels))
        self.checkpointing = False
        self.checkpoint_downsample = False  # selective: only the HR-side strided convs
        if lr_parameterisation == "bicubic_residual":
            # A zero correction to start with: an untrained encoder stores exactly the thumbnail. The weights are
            # still trained (their gradient is not zero), and the state dict keeps the paper's keys and shapes.
            nn.init.zeros_(self.to_lr[-1].weight)
            nn.init.zeros_(self.to_lr[-1].bias)

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        # The HR-sized activations of the strided convs are cheap to recompute and the largest to keep.
        x = maybe_checkpoint(self._downsample, hr, enabled=self.checkpointing or self.checkpoint_downsample)
        x = x + self.trunk_conv(self.trunk(x))
        lr = self.to_lr(x)
        if self.lr_parameterisation == "bicubic_residual":
            lr = lr + bicubic_thumbnail(hr, lr.shape[-1])
        return lr

    def _downsample(self, hr: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(hr)
        for down in self.down:
            x = down(x)
        return x

    def extra_repr(self) -> str:
        return f"lr_parameterisation={self.lr_parameterisation!r}"


class BicubicEncoder(nn.Module):
    """The fixed encoder of `GrainConfig(encoder="bicubic")`: HR -> its 8-bit levels -> `bicubic_thumbnail` ->
    rounded to 8 bits, i.e. exactly the LR `grain evaluate`'s bicubic baseline stores (`resize_levels`: the same
    float resize of the levels, rounded and clamped). Its output is already an 8-bit image, in training too: the
    decoder then learns from the very thumbnails it will be given. No parameters, no gradient."""

    def __init__(self, lr_size: int) -> None:
        super().__init__()
        self.lr_size = lr_size

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        levels = to_uint8(hr).float()  # a thumbnail is made from an 8-bit image
        with torch.autocast(device_type=hr.device.type, enabled=False):  # float32 even under autocast: it is rounded
            thumbnail = bicubic_thumbnail(levels, self.lr_size)
        return from_uint8(thumbnail.round().clamp(0, LEVELS))

    def extra_repr(self) -> str:
        return f"lr_size={self.lr_size}, fixed antialiased bicubic downscale"
