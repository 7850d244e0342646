"""Plain-PyTorch versions of the two custom CUDA ops StyleGAN2 relies on.

rosinality's `op/` package compiles `upfirdn2d` and `fused_bias_act` with nvcc when it is imported. These
functions compute the same numbers with ordinary PyTorch ops, so they run on any device and nothing is
compiled or loaded at import time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IntPair = int | tuple[int, int]


def make_kernel(taps: Sequence[float] | Tensor, device: torch.device | str | None = None) -> Tensor:
    """A 2-D FIR kernel that sums to 1: the outer product of 1-D `taps` with itself, or a given 2-D kernel.

    `device` None means torch's current default device (so `with torch.device("meta"):` builds meta kernels).
    """
    kernel = torch.as_tensor(taps, dtype=torch.float32, device=device).clone()
    if kernel.ndim == 1:
        kernel = kernel[None, :] * kernel[:, None]
    if kernel.ndim != 2:
        raise ValueError(f"make_kernel: expected 1-D taps or a 2-D kernel, got shape {tuple(kernel.shape)}")
    return kernel / kernel.sum()


def _pair(value: IntPair, name: str) -> tuple[int, int]:
    """(x, y) from an int or an (x, y) pair."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or any(int(v) < 1 for v in pair):
        raise ValueError(f"upfirdn2d: {name} must be a positive int or an (x, y) pair, got {value!r}")
    return int(pair[0]), int(pair[1])


def _pads(pad: Sequence[int]) -> tuple[int, int, int, int]:
    """(x0, x1, y0, y1); rosinality's two-element (p0, p1) applies the same pads to both axes."""
    if len(pad) == 2:
        return int(pad[0]), int(pad[1]), int(pad[0]), int(pad[1])
    if len(pad) == 4:
        return int(pad[0]), int(pad[1]), int(pad[2]), int(pad[3])
    raise ValueError(f"upfirdn2d: pad must be (p0, p1) or (x0, x1, y0, y1), got {pad!r}")


def upfirdn2d(
    x: Tensor,
    kernel: Tensor,
    up: IntPair = 1,
    down: IntPair = 1,
    pad: Sequence[int] = (0, 0),
) -> Tensor:
    """Upsample, pad, FIR-filter and downsample a batch of images, as rosinality's `upfirdn2d` does.

    The steps, each channel on its own:
    1. upsample by inserting `up - 1` zeros after every pixel (along x and y);
    2. pad with zeros by (x0, x1, y0, y1); a negative pad crops instead;
    3. convolve with `kernel` (a true convolution: the kernel is flipped, then correlated, no padding);
    4. keep every `down`-th pixel, starting at the first.

    Output size per axis: (in * up + pad0 + pad1 - kernel_size) // down + 1.

    Args:
        x: (B, C, H, W).
        kernel: (kh, kw) FIR kernel.
        up: upsampling factor, an int or (up_x, up_y).
        down: downsampling factor, an int or (down_x, down_y).
        pad: (p0, p1) for both axes, or (x0, x1, y0, y1).
    """
    if x.ndim != 4 or kernel.ndim != 2:
        raise ValueError(f"upfirdn2d: expected x (B,C,H,W) and kernel (kh,kw), got {tuple(x.shape)}, "
                         f"{tuple(kernel.shape)}")
    up_x, up_y = _pair(up, "up")
    down_x, down_y = _pair(down, "down")
    pad_x0, pad_x1, pad_y0, pad_y1 = _pads(pad)
    batch, channels, height, width = x.shape
    # Plain ints even while torch.onnx.export traces (it traces sizes as tensors): an exported graph fixes every
    # size but the batch's, and its depthwise conv needs a kernel of known shape.
    channels, height, width = int(channels), int(height), int(width)

    # 1. zero insertion: view each pixel as a 1x1 block and pad it to up_y x up_x with zeros after it.
    if up_x > 1 or up_y > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, (0, up_x - 1, 0, 0, 0, up_y - 1))
        x = x.reshape(batch, channels, height * up_y, width * up_x)

    # 2. positive pads add zeros, negative pads crop.
    x = F.pad(x, (max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)))
    padded_height, padded_width = int(x.shape[2]), int(x.shape[3])
    x = x[:, :, max(-pad_y0, 0): padded_height - max(-pad_y1, 0), max(-pad_x0, 0): padded_width - max(-pad_x1, 0)]

    # 3 + 4. conv2d correlates, so flip the kernel to convolve; the stride keeps every down-th output,
    # exactly like slicing [::down] after a stride-1 convolution. One depthwise group per channel.
    weight = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    weight = weight[None, None].repeat(channels, 1, 1, 1)
    return F.conv2d(x, weight, stride=(down_y, down_x), groups=channels)


def fused_leaky_relu(
    x: Tensor,
    bias: Tensor | None = None,
    negative_slope: float = 0.2,
    scale: float = 2**0.5,
) -> Tensor:
    """leaky_relu(x + bias) * scale, with `bias` (C,) added along dim 1 (rosinality's `fused_leaky_relu`)."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    return F.leaky_relu(x, negative_slope=negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    """Learned per-channel bias, leaky ReLU (slope 0.2) and a sqrt(2) gain that keeps the variance.

    Args:
        channels: number of channels (size of the `bias` parameter).
        bias: whether to learn a bias (initialised to zero).
        negative_slope: slope for negative inputs.
        scale: output gain.
    """

    def __init__(self, channels: int, bias: bool = True, negative_slope: float = 0.2, scale: float = 2**0.5):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)
