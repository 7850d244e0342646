"""StyleGAN2 residual discriminator (rosinality layout), used by GRAIN as a pretrained adversary in stages 2-4."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from grain_pl.networks.stylegan2.layers import (
    DEFAULT_BLUR_KERNEL,
    ConvLayer,
    EqualLinear,
    ResBlock,
    stylegan2_channels,
)


def _stddev_group_size(batch_size: int, preferred: int) -> int:
    """Samples per minibatch-stddev group.

    rosinality uses min(batch, 4) and reshapes the batch into groups of that size, which crashes when a batch
    above 4 is not a multiple of 4 (e.g. 6). We fall back to the largest divisor of the batch that is <= the
    preferred size; every batch that rosinality accepts gets rosinality's grouping.
    """
    group = min(batch_size, preferred)
    while batch_size % group != 0:
        group -= 1
    return group


class StyleGAN2Discriminator(nn.Module):
    """rosinality's StyleGAN2 `Discriminator`: image (B, 3, size, size) -> realness logits (B, 1).

    Args:
        size: input resolution, a power of two from 8 to 1024.
        channel_multiplier: 2 for config-f.
        blur_kernel: 1-D taps of the down-sampling filter.
        channel_max: cap on every resolution's channel count (512 reproduces rosinality).
        stddev_group: preferred number of samples per minibatch-stddev group (rosinality: 4).
    """

    def __init__(
        self,
        size: int,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        channel_max: int = 512,
        stddev_group: int = 4,
    ):
        super().__init__()
        self.size = size
        self.channels = stylegan2_channels(size, channel_multiplier, channel_max)
        self.stddev_group = stddev_group
        self.stddev_feat = 1

        # fromRGB at full resolution, then one ResBlock per halving down to 4x4.
        blocks: list[nn.Module] = [ConvLayer(3, self.channels[size], 1)]
        res = size
        while res > 4:
            blocks.append(ResBlock(self.channels[res], self.channels[res // 2], blur_kernel))
            res //= 2
        self.convs = nn.Sequential(*blocks)

        channels_4 = self.channels[4]
        self.final_conv = ConvLayer(channels_4 + self.stddev_feat, channels_4, 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels_4 * 4 * 4, channels_4, activation="fused_lrelu"),
            EqualLinear(channels_4, 1),
        )

    def minibatch_stddev(self, x: Tensor) -> Tensor:
        """Append one channel: the mean over channels and pixels of the per-group standard deviation.

        Sample b belongs to group b % (batch // group), as in rosinality's `view(group, -1, ...)`.
        """
        batch, channels, height, width = x.shape
        group = _stddev_group_size(batch, self.stddev_group)
        grouped = x.reshape(group, -1, self.stddev_feat, channels // self.stddev_feat, height, width)
        stddev = torch.sqrt(grouped.var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2)  # (batch // group, feat, 1, 1)
        stddev = stddev.repeat(group, 1, height, width)
        return torch.cat([x, stddev], dim=1)

    def forward(self, image: Tensor) -> Tensor:
        out = self.minibatch_stddev(self.convs(image))
        out = self.final_conv(out)
        return self.final_linear(out.reshape(out.shape[0], -1))
