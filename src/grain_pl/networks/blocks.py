"""ESRGAN-style dense blocks and the squeeze-excitation gate shared by the GRAIN networks.

GRAIN keeps ESRGAN's structure and its 0.2 residual scaling at both levels, and PyTorch's default
initialisation (no 0.1 init scaling as in BasicSR). Channel counts are arguments so the same blocks build
the paper's 64/32 widths and the tiny test presets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from grain_pl.networks.checkpointing import maybe_checkpoint

RESIDUAL_SCALE = 0.2
LRELU_SLOPE = 0.2


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


def lrelu() -> nn.LeakyReLU:
    return nn.LeakyReLU(LRELU_SLOPE, inplace=True)


def conv_lrelu(in_channels: int, out_channels: int, stride: int = 1) -> list[nn.Module]:
    """A 3x3 conv and its LReLU, as a list so callers can splice it into one Sequential (flat state-dict keys)."""
    return [conv3x3(in_channels, out_channels, stride), lrelu()]


class ResidualDenseBlock(nn.Module):
    """`num_convs` densely connected 3x3 convs; each sees the block input and every earlier output.

    The last conv maps back to `channels` with no activation; output = 0.2 * last + input.
    num_convs=5 is ESRGAN's RDB-5C; num_convs=4 is GRAIN's lighter RDB-4C used at the two finest scales.
    """

    def __init__(self, channels: int = 64, growth_channels: int = 32, num_convs: int = 5) -> None:
        super().__init__()
        if num_convs < 2:
            raise ValueError(f"a dense block needs at least 2 convs, got num_convs={num_convs}")
        self.num_convs = num_convs
        for index in range(1, num_convs + 1):
            in_channels = channels + (index - 1) * growth_channels
            out_channels = channels if index == num_convs else growth_channels
            self.add_module(f"conv{index}", conv3x3(in_channels, out_channels))
        self.act = lrelu()
        self.checkpointing = False

    def _dense_step(self, index: int):
        conv = getattr(self, f"conv{index}")
        if index == self.num_convs:
            return lambda *features: conv_over_concat(conv, features)
        return lambda *features: self.act(conv_over_concat(conv, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # With checkpointing, only the block input and the growth outputs are kept for the backward pass.
        features = [x]
        for index in range(1, self.num_convs):
            features.append(maybe_checkpoint(self._dense_step(index), *features, enabled=self.checkpointing))
        last = maybe_checkpoint(self._dense_step(self.num_convs), *features, enabled=self.checkpointing)
        return last * RESIDUAL_SCALE + x


def conv_over_concat(conv: nn.Conv2d, parts: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> torch.Tensor:
    """`conv(torch.cat(parts, dim=1))` as a sum of convs over the parts, with the matching weight slices.

    Same result (up to float summation order), but the concatenation, up to 160 channels at HR size in the
    decoder, and its gradient are never materialised: the dense blocks' largest memory cost.
    """
    out = None
    start = 0
    for part in parts:
        width = part.shape[1]
        term = F.conv2d(part, conv.weight[:, start:start + width], None, conv.stride, conv.padding)
        out = term if out is None else out.add_(term)
        start += width
    if start != conv.in_channels:
        raise ValueError(f"parts have {start} channels in all, the conv expects {conv.in_channels}")
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)


class RRDB(nn.Module):
    """Residual-in-residual dense block: a chain of dense blocks with a 0.2-scaled skip around it.

    RRDB(num_dense_blocks=3, convs_per_block=5) is ESRGAN's RRDB; RRDB(1, 4) is GRAIN's `RRDB2`
    (one RDB-4C, so its residual is scaled twice).
    """

    def __init__(self, channels: int = 64, growth_channels: int = 32, num_dense_blocks: int = 3,
                 convs_per_block: int = 5) -> None:
        super().__init__()
        self.num_dense_blocks = num_dense_blocks
        for index in range(1, num_dense_blocks + 1):
            self.add_module(f"rdb{index}", ResidualDenseBlock(channels, growth_channels, convs_per_block))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for index in range(1, self.num_dense_blocks + 1):
            out = getattr(self, f"rdb{index}")(out)
        return out * RESIDUAL_SCALE + x


def light_rrdb(channels: int, growth_channels: int) -> RRDB:
    """GRAIN's `RRDB2`: the cheap block it uses where feature maps are largest."""
    return RRDB(channels, growth_channels, num_dense_blocks=1, convs_per_block=4)


class SqueezeExcitation(nn.Module):
    """Channel gate: global average pool, 1x1 C->C/r (no bias), ReLU, 1x1 C/r->C (no bias), sigmoid, scale."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True)
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(pooled))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
