"""Decoder: LR image -> a feature map at every scale and `y_inv`, the HR reconstruction of the
"Invertible Extreme Rescaling Module".

At each scale, from LR up to HR: nearest x2 upsampling (none at the LR scale), a stack of RRDBs, a trunk
conv and a residual add. The feature map of each scale is taken after the residual add, before upsampling;
the latent-code bank reads all of them and the fusion decoder the finest ones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grain_pl.networks.blocks import RRDB, conv3x3, light_rrdb, lrelu
from grain_pl.networks.checkpointing import maybe_checkpoint


class DecoderScale(nn.Module):
    """RRDBs + trunk conv with a residual around them, at one resolution."""

    def __init__(self, channels: int, growth_channels: int, num_blocks: int, light: bool) -> None:
        super().__init__()
        make_block = (lambda: light_rrdb(channels, growth_channels)) if light else (
            lambda: RRDB(channels, growth_channels))
        self.blocks = nn.Sequential(*(make_block() for _ in range(num_blocks)))
        self.trunk_conv = conv3x3(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.trunk_conv(self.blocks(x))


class Decoder(nn.Module):
    def __init__(self, resolutions: tuple[int, ...], blocks_per_scale: dict[int, int], light_resolutions: set[int],
                 channels: int = 64, growth_channels: int = 32, image_channels: int = 3) -> None:
        super().__init__()
        self.resolutions = tuple(resolutions)
        self.conv_first = conv3x3(image_channels, channels)
        self.scales = nn.ModuleDict({
            str(resolution): DecoderScale(channels, growth_channels, blocks_per_scale[resolution],
                                          light=resolution in light_resolutions)
            for resolution in self.resolutions
        })
        self.to_hr = nn.Sequential(conv3x3(channels, channels), lrelu(), conv3x3(channels, channels // 2), lrelu(),
                                   conv3x3(channels // 2, image_channels))
        self.checkpointing = False
        self.checkpoint_min_size: int | None = None  # selective: only the scales from this size up
        self.image_head_grad = True  # False: y_inv without autograd (where no loss reads it)

    def forward(self, lr: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Returns `(y_inv, features)`, features keyed by resolution (LR ... HR)."""
        x = self.conv_first(lr)
        features: dict[int, torch.Tensor] = {}
        for index, resolution in enumerate(self.resolutions):
            if index > 0:
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            selected = self.checkpoint_min_size is not None and resolution >= self.checkpoint_min_size
            x = maybe_checkpoint(self.scales[str(resolution)], x, enabled=self.checkpointing or selected)
            features[resolution] = x
        if not self.image_head_grad:
            with torch.no_grad():
                return self.to_hr(x), features
        y_inv = maybe_checkpoint(self.to_hr, x, enabled=self.checkpointing)
        return y_inv, features
