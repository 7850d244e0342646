"""Thumbnails that survive re-encoding (issue 12): in training steps, the LR passes through a differentiable JPEG at
random qualities between the quantizer and the decoder.

A platform re-encodes what it stores, so the decoder may be given a JPEG of the LR instead of its PNG. With
`GrainStage(lr_jpeg=LRJpeg(...))` every training step (the discriminator's too) hands the decoder, for each sample
with probability `probability`, the quantized LR as a JPEG at a quality drawn uniformly from `quality_min` ..
`quality_max` would give it back, and the LR as it is otherwise. The stored LR itself (what the LR guidance and
the LR fidelity read) is the one before the JPEG. Validation, `grain evaluate` and the codec see the lossless LR.

The JPEG is kornia's `jpeg_codec_differentiable` (4:2:0 chroma, the standard tables scaled by quality as libjpeg
does; it pads the image on the bottom and right by replication to a multiple of 16 and crops back, so any LR size
works). Its rounding of the DCT coefficients is `round(x) + (x - round(x))**3`, whose gradient, 3 (x - round(x))**2,
is 0.25 on average and 0 at the rounded values: the encoder's gradient through it is weaker and noisier than
through the lossless path. `straight_through=True` instead passes the gradient as if there were no JPEG (the value
is still the JPEG's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from kornia.enhance import jpeg_codec_differentiable


@dataclass(frozen=True)
class LRJpeg:
    """How a training step re-encodes the LR before the decoder (docs/training.md, "Robust to JPEG")."""

    quality_min: int = 50  # JPEG qualities, drawn uniformly per sample from quality_min .. quality_max (1..100)
    quality_max: int = 95
    # share of the samples that get a JPEG; the others keep the lossless LR, so the decoder does not unlearn it
    # (0.75 is a guess, not tuned)
    probability: float = 0.75
    straight_through: bool = False  # gradient of the lossless path instead of kornia's approximation

    def __post_init__(self) -> None:
        for name in ("quality_min", "quality_max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
                raise ValueError(f"lr_jpeg.{name} must be a JPEG quality, an integer 1..100, got {value!r}")
        if self.quality_min > self.quality_max:
            raise ValueError(f"lr_jpeg.quality_min ({self.quality_min}) is above lr_jpeg.quality_max "
                             f"({self.quality_max}): the range of qualities is empty")
        if isinstance(self.probability, bool) or not isinstance(self.probability, int | float) \
                or not (math.isfinite(self.probability) and 0 < self.probability <= 1):
            raise ValueError(f"lr_jpeg.probability must be a share of the samples in (0, 1], got {self.probability!r} "
                             "(to train without JPEG, leave lr_jpeg out)")


def jpeg_lr(lr: torch.Tensor, options: LRJpeg) -> torch.Tensor:
    """`lr` (B, 3, h, w) in [-1, 1], each sample with probability `options.probability` as a JPEG at a random
    quality gives it back, the others as they are (draws from torch's global generator)."""
    batch = lr.shape[0]
    qualities = torch.randint(options.quality_min, options.quality_max + 1, (batch,), device=lr.device)
    applied = torch.rand(batch, device=lr.device) < options.probability
    # kornia takes RGB in [0, 1], and views its 8x8 blocks: a channels-last LR (the demo's) is made contiguous
    coded = jpeg_codec_differentiable(((lr + 1) / 2).contiguous(), qualities.to(lr.dtype)) * 2 - 1
    if options.straight_through:
        coded = lr + (coded - lr).detach()
    return torch.where(applied[:, None, None, None], coded, lr)


__all__ = ["LRJpeg", "jpeg_lr"]
