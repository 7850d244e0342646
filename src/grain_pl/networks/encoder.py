"""Encoder: HR image -> float LR image (first half of the "Invertible Extreme Rescaling Module").

Strided 3x3 convs take the HR image down to the LR size; all heavy processing (the RRDB trunk) then runs
at the LR size, where it is cheap. There is no output activation: the quantizer clamps.
"""

from __future__ import annotations

import torch
from torch import nn

from grain_pl.networks.blocks import RRDB, conv3x3, conv_lrelu, lrelu
from grain_pl.networks.checkpointing import maybe_checkpoint


class Encoder(nn.Module):
    def __init__(self, num_downsamples: int, channels: int = 64, growth_channels: int = 32, num_blocks: int = 10,
                 image_channels: int = 3) -> None:
        super().__init__()
        self.conv_first = conv3x3(image_channels, channels)
        # One stride-2 conv per halving; each a Sequential(conv, LReLU) so the keys read `down.{i}.0`.
        self.down = nn.ModuleList(nn.Sequential(*conv_lrelu(channels, channels, stride=2))
                                  for _ in range(num_downsamples))
        self.trunk = nn.Sequential(*(RRDB(channels, growth_channels) for _ in range(num_blocks)))
        self.trunk_conv = conv3x3(channels, channels)
        self.to_lr = nn.Sequential(conv3x3(channels, channels), lrelu(), conv3x3(channels, image_channels))
        self.checkpointing = False

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        # The HR-sized activations of the strided convs are cheap to recompute and the largest to keep.
        x = maybe_checkpoint(self._downsample, hr, enabled=self.checkpointing)
        x = x + self.trunk_conv(self.trunk(x))
        return self.to_lr(x)

    def _downsample(self, hr: torch.Tensor) -> torch.Tensor:
        x = self.conv_first(hr)
        for down in self.down:
            x = down(x)
        return x
