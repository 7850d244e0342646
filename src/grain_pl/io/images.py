"""The one place that maps between image tensors in [-1, 1] and 8-bit pixel values.

The quantizer and every PNG reader/writer use these two functions, so an LR image that is written as a
PNG and read back is bit-identical to the tensor the decoder consumed.
"""

from __future__ import annotations

import torch

LEVELS = 255


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, rounding to the nearest level (the official code truncates; we round)."""
    return ((image.detach().float() + 1) * (LEVELS / 2)).round().clamp(0, LEVELS).to(torch.uint8)


def from_uint8(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (or integral float) levels -> [-1, 1]: level / 127.5 - 1."""
    return pixels.to(dtype) / (LEVELS / 2) - 1
