"""Latent-code bank: decoder features -> W+ codes for the frozen StyleGAN2 (the "Scale-Specific Generative
Prior Module", GRAIN's `Fea2Code`).

One block per pair of W+ codes. Block k works at resolution 2**(k+2), clamped to the decoder's range, so
each decoder scale finer than the LR feeds exactly one block, and the LR feature feeds the remaining coarse
blocks (w0..w5 at 16x16 LR). Blocks run fine to coarse: a block's first stride-2 conv output is added to
the decoder feature that the next coarser block reads. Each block then brings its feature to
`head_size` x `head_size` and two heads of stride-2 convs and a Linear give the codes w_{2k} and w_{2k+1}.
Codes are offsets from the prior's `latent_avg`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from grain_pl.networks.blocks import conv_lrelu


def _head(channels: int, style_dim: int, head_size: int) -> nn.Sequential:
    """Stride-2 convs from head_size x head_size down to 1x1, ending in widths style_dim/4, /2, 1 (paper: 64,
    128, 256, 512 from 16x16)."""
    steps = int(math.log2(head_size))
    widths = [channels, style_dim // 4, style_dim // 2, style_dim][-steps:]
    layers: list[nn.Module] = []
    in_channels = channels
    for out_channels in widths:
        layers += conv_lrelu(in_channels, out_channels, stride=2)
        in_channels = out_channels
    return nn.Sequential(*layers)


class LatentCodeBlock(nn.Module):
    """Two W+ codes from one decoder feature map (GRAIN's `GradualStyleBlock`)."""

    def __init__(self, resolution: int, channels: int, style_dim: int, head_size: int) -> None:
        super().__init__()
        self.resolution = resolution
        halvings = int(math.log2(resolution // head_size)) if resolution > head_size else 0
        # downsample.0 is the conv whose output also goes to the next coarser block.
        self.downsample = nn.Sequential(*(layer for _ in range(halvings)
                                          for layer in conv_lrelu(channels, channels, stride=2)))
        self.even_convs = _head(channels, style_dim, min(head_size, resolution))
        self.even_linear = nn.Linear(style_dim, style_dim)
        self.odd_convs = _head(channels, style_dim, min(head_size, resolution))
        self.odd_linear = nn.Linear(style_dim, style_dim)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Returns `(codes (B, 2, style_dim), feature for the next coarser block or None)`."""
        passed_down = None
        if len(self.downsample):
            passed_down = self.downsample[1](self.downsample[0](feature))
            feature = self.downsample[2:](passed_down)
        even = self.even_linear(self.even_convs(feature).flatten(1))
        odd = self.odd_linear(self.odd_convs(feature).flatten(1))
        return torch.stack([even, odd], dim=1), passed_down


class LatentCodeBank(nn.Module):
    def __init__(self, num_ws: int, decoder_resolutions: tuple[int, ...], channels: int = 64, style_dim: int = 512,
                 head_size: int = 16) -> None:
        super().__init__()
        if num_ws % 2:
            raise ValueError(f"num_ws must be even (codes come in pairs), got {num_ws}")
        lowest, highest = min(decoder_resolutions), max(decoder_resolutions)
        self.num_ws, self.style_dim = num_ws, style_dim
        self.block_resolutions = [min(max(2 ** (k + 2), lowest), highest) for k in range(num_ws // 2)]
        missing = sorted(set(decoder_resolutions) - set(self.block_resolutions))
        if missing:
            raise ValueError(f"decoder scales {missing} would feed no latent-code block ({num_ws} codes)")
        self.blocks = nn.ModuleList(LatentCodeBlock(resolution, channels, style_dim, head_size)
                                    for resolution in self.block_resolutions)
        # From the prior's checkpoint (its mean W); saved with GRAIN checkpoints so they are self-contained.
        self.register_buffer("latent_avg", torch.zeros(style_dim))

    def forward(self, features: dict[int, torch.Tensor]) -> torch.Tensor:
        """decoder features (keyed by resolution) -> w_plus (B, num_ws, style_dim)."""
        codes: list[torch.Tensor | None] = [None] * len(self.blocks)
        passed_down: dict[int, torch.Tensor] = {}
        for k in reversed(range(len(self.blocks))):  # fine to coarse
            resolution = self.block_resolutions[k]
            feature = features[resolution]
            if resolution in passed_down:
                feature = feature + passed_down[resolution]
            codes[k], to_coarser = self.blocks[k](feature)
            if to_coarser is not None and resolution // 2 not in passed_down:
                passed_down[resolution // 2] = to_coarser
        offsets = torch.cat(codes, dim=1)
        return offsets + self.latent_avg.to(offsets.dtype)
