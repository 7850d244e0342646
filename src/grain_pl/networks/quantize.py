"""Quantizer: the float LR becomes a storable 8-bit image.

Training (as the official `Noise` module): add uniform noise of +-0.5 in 8-bit units, then clamp to [0, 255],
so the decoder learns to cope with rounding while gradients still flow. Evaluation: round and clamp, so the
LR is exactly an 8-bit image and `lr == from_uint8(to_uint8(lr))` bit for bit; the rounding passes
gradients straight through. The official code never rounds, even at test time (docs/method.md section 6.1);
`noise_at_eval=True` reproduces that for comparisons with the released numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from grain_pl.io.images import LEVELS


class Quantize(nn.Module):
    def __init__(self, noise_at_eval: bool = False) -> None:
        super().__init__()
        self.noise_at_eval = noise_at_eval

    def forward(self, lr_float: torch.Tensor) -> torch.Tensor:
        levels = (lr_float + 1) * (LEVELS / 2)
        if self.training or self.noise_at_eval:
            noisy = levels + torch.rand_like(levels) - 0.5
            return torch.clamp(noisy, 0, LEVELS) / (LEVELS / 2) - 1
        # Straight-through rounding: `levels - levels.detach()` is exactly 0 with gradient 1, so the value is
        # exactly the rounded level (and the division below is from_uint8's), while gradients pass.
        rounded = (levels - levels.detach()) + levels.detach().round()
        return torch.clamp(rounded, 0, LEVELS) / (LEVELS / 2) - 1

    def extra_repr(self) -> str:
        return f"noise_at_eval={self.noise_at_eval}"
