"""The stage-1 patch discriminator (a relativistic GAN critic trained from scratch).

Four blocks, each a 3x3 conv, BatchNorm (not in the first block), LReLU, then a stride-2 3x3 conv, BatchNorm,
LReLU; a final 3x3 conv gives one logit per patch. The official code applies it to HR images bilinearly
resized to 256x256, giving 16x16 logits.
"""

from __future__ import annotations

import torch
from torch import nn

from grain_pl.networks.blocks import LRELU_SLOPE, conv3x3


class PatchDiscriminator(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512), image_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = image_channels
        for index, width in enumerate(widths):
            layers.append(conv3x3(in_channels, width))
            if index > 0:
                layers.append(nn.BatchNorm2d(width))
            layers += [nn.LeakyReLU(LRELU_SLOPE, inplace=True), conv3x3(width, width, stride=2),
                       nn.BatchNorm2d(width), nn.LeakyReLU(LRELU_SLOPE, inplace=True)]
            in_channels = width
        layers.append(conv3x3(in_channels, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> patch logits (B, 1, H/16, W/16)."""
        return self.layers(image)
