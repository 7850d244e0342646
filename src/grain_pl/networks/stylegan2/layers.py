"""StyleGAN2 building blocks with rosinality's parameter names, shapes and numerics.

Every attribute name below is part of the rosinality checkpoint layout (`conv.modulation.weight`,
`noise.weight`, `activate.bias`, `blur.kernel`, ...), so renaming one breaks loading pretrained priors.
Weights are stored unscaled and multiplied by their equalized-learning-rate constant at run time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grain_pl.networks.stylegan2.ops import FusedLeakyReLU, fused_leaky_relu, make_kernel, upfirdn2d

DEFAULT_BLUR_KERNEL = (1, 3, 3, 1)

# rosinality's channel table before channel_multiplier: resolutions below MULTIPLIED_FROM always have their base
# channels (512), the others base * channel_multiplier. The one copy of the table: the GRAIN config and the
# rosinality converter read it from here.
BASE_CHANNELS = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}
MULTIPLIED_FROM = 64
SUPPORTED_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)


def channels_at(resolution: int, channel_multiplier: int = 2, channel_max: int = 512) -> int:
    """Channels of rosinality's G and D at one resolution (4 .. 1024), capped at `channel_max`."""
    base = BASE_CHANNELS[resolution]
    return int(min(base * channel_multiplier if resolution >= MULTIPLIED_FROM else base, channel_max))


def stylegan2_channels(size: int, channel_multiplier: int = 2, channel_max: int = 512) -> dict[int, int]:
    """Channels per resolution (4 .. size) of rosinality's G and D, each capped at `channel_max`.

    `channel_max` is not in rosinality; at its default (512) the table is rosinality's for any multiplier <= 2.
    A small `channel_max` builds tiny networks for tests.
    """
    if size not in SUPPORTED_SIZES:
        raise ValueError(f"StyleGAN2 size must be a power of two from 8 to 1024, got {size}")
    if channel_multiplier <= 0 or channel_max <= 0:
        raise ValueError(f"channel_multiplier and channel_max must be positive, got {channel_multiplier}, "
                         f"{channel_max}")
    return {res: channels_at(res, channel_multiplier, channel_max) for res in BASE_CHANNELS if res <= size}


class PixelNorm(nn.Module):
    """Scale every vector along dim 1 to unit root-mean-square."""

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate.

    Output = x @ (weight * scale).T + bias * lr_mul with scale = lr_mul / sqrt(in_dim). The weight is
    initialised to N(0, 1) / lr_mul, so `lr_mul` slows the effective learning rate (0.01 in the mapping MLP).

    Args:
        in_dim: input features.
        out_dim: output features.
        bias: whether to learn a bias.
        bias_init: initial bias value (1 for the style modulation, so styles start near identity).
        lr_mul: learning-rate multiplier.
        activation: None, or "fused_lrelu" for a fused leaky ReLU after the bias.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias: bool = True,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        activation: str | None = None,
    ):
        super().__init__()
        if activation not in (None, "fused_lrelu"):
            raise ValueError(f"EqualLinear: activation must be None or 'fused_lrelu', got {activation!r}")
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: Tensor) -> Tensor:
        bias = None if self.bias is None else self.bias * self.lr_mul
        if self.activation:
            return fused_leaky_relu(F.linear(x, self.weight * self.scale), bias)
        return F.linear(x, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, lr_mul={self.lr_mul}, activation={self.activation}"


class EqualConv2d(nn.Module):
    """Conv2d with equalized learning rate: weight scaled by 1/sqrt(in_channels * k * k) at run time."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.stride = stride
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        out_channels, in_channels, kernel_size, _ = self.weight.shape
        return f"{in_channels}, {out_channels}, {kernel_size}, stride={self.stride}, padding={self.padding}"


class Blur(nn.Module):
    """FIR low-pass filter (upfirdn2d with up = down = 1) with the given pads.

    After a stride-2 transposed conv the kernel is multiplied by upsample_factor**2, which restores the
    brightness lost to the inserted zeros.
    """

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        self.taps = tuple(taps)
        self.upsample_factor = upsample_factor
        self.pad = tuple(pad)
        self.register_buffer("kernel", self.fresh_kernel())

    def fresh_kernel(self, device: torch.device | str | None = None) -> Tensor:
        """The kernel buffer as built at construction (float32); used to rebuild it for old checkpoints."""
        kernel = make_kernel(self.taps, device=device)
        if self.upsample_factor > 1:
            kernel = kernel * self.upsample_factor**2
        return kernel

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, pad=self.pad)


class Upsample(nn.Module):
    """2x (or `factor`x) FIR upsampling: zero insertion, then a kernel scaled by factor**2."""

    def __init__(self, taps: Sequence[float], factor: int = 2):
        super().__init__()
        self.taps = tuple(taps)
        self.factor = factor
        excess = len(self.taps) - factor
        # rosinality's pads: they centre the filter so the output is exactly factor times larger.
        self.pad = ((excess + 1) // 2 + factor - 1, excess // 2)
        self.register_buffer("kernel", self.fresh_kernel())

    def fresh_kernel(self, device: torch.device | str | None = None) -> Tensor:
        """The kernel buffer as built at construction (float32); used to rebuild it for old checkpoints."""
        return make_kernel(self.taps, device=device) * self.factor**2

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d(x, self.kernel, up=self.factor, down=1, pad=self.pad)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution (StyleGAN2 weight demodulation).

    Each sample gets its own weight: weight * scale * style, where the style is an affine map of w
    (EqualLinear, bias initialised to 1). With `demodulate`, each output filter is renormalised by
    rsqrt(sum(weight**2) + 1e-8). The batch is folded into the channel dimension and convolved as groups.
    With `upsample`, a stride-2 transposed conv is followed by a Blur (rosinality's pads).

    `fused=False` (and always while `torch.onnx.export` traces it) computes the same thing without per-sample
    weights, as StyleGAN2-ADA's `fused_modconv=False`: the input scaled by the style, one conv with the shared
    weight, the output scaled by the demodulation. Equal up to float summation order; an ONNX Conv's `group` is a
    constant, so the grouped form would fix the batch size of an exported graph.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size (3 for StyledConv, 1 for ToRGB).
        style_dim: dimension of w.
        demodulate: normalise each output filter (off in ToRGB).
        upsample: double the resolution.
        blur_kernel: 1-D taps of the anti-aliasing filter.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.upsample = upsample
        self.demodulate = demodulate
        if upsample:
            factor = 2
            excess = (len(blur_kernel) - factor) - (kernel_size - 1)
            # For a 3x3 conv and 4 taps this is (1, 1): the transposed conv's 2H+1 output back to 2H.
            self.blur = Blur(blur_kernel, pad=((excess + 1) // 2 + factor - 1, excess // 2 + 1),
                             upsample_factor=factor)
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1)
        self.fused = True

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        if not self.fused or torch.onnx.is_in_onnx_export():
            return self._forward_unfused(x, style)
        batch, in_channels, height, width = x.shape
        k = self.kernel_size
        style = self.modulation(style).reshape(batch, 1, in_channels, 1, 1)
        weight = self.scale * self.weight * style  # (B, out, in, k, k)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.reshape(batch, self.out_channels, 1, 1, 1)

        x = x.reshape(1, batch * in_channels, height, width)
        if self.upsample:
            # conv_transpose2d wants (in, out/groups, k, k) per group.
            weight = weight.transpose(1, 2).reshape(batch * in_channels, self.out_channels, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = self.blur(out.reshape(batch, self.out_channels, *out.shape[2:]))
        else:
            weight = weight.reshape(batch * self.out_channels, in_channels, k, k)
            out = F.conv2d(x, weight, padding=self.padding, groups=batch)
            out = out.reshape(batch, self.out_channels, *out.shape[2:])
        return out

    def _forward_unfused(self, x: Tensor, style: Tensor) -> Tensor:
        style = self.modulation(style)  # (B, in)
        weight = self.scale * self.weight[0]  # (out, in, k, k), shared by the batch
        x = x * style[:, :, None, None]
        if self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum over (in, k, k) of (weight * style)**2, as the fused form's, from the per-(out, in) sums
            demod = torch.rsqrt(style.pow(2) @ weight.pow(2).sum([2, 3]).t() + 1e-8)  # (B, out)
            out = out * demod[:, :, None, None]  # before the blur: it filters each channel on its own
        return self.blur(out) if self.upsample else out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, {self.kernel_size}, demodulate={self.demodulate}, "
                f"upsample={self.upsample}")


class NoiseInjection(nn.Module):
    """Adds a learned multiple (`weight`, shape (1,), starts at 0) of a single-channel noise map."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor | None) -> Tensor:
        """`noise` broadcasts to (B, 1, H, W); None adds nothing (the generator decides the noise mode)."""
        if noise is None:
            return x
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 starting tensor of the synthesis network, repeated over the batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch_size: int) -> Tensor:
        return self.input.repeat(batch_size, 1, 1, 1)


class StyledConv(nn.Module):
    """ModulatedConv2d, then noise injection, then bias + leaky ReLU (`conv`, `noise`, `activate`)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        upsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        demodulate: bool = True,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(in_channels, out_channels, kernel_size, style_dim, demodulate=demodulate,
                                    upsample=upsample, blur_kernel=blur_kernel)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channels)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus bias, added to the upsampled RGB of the previous block."""

    def __init__(
        self,
        in_channels: int,
        style_dim: int,
        upsample: bool = True,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
    ):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConvLayer(nn.Sequential):
    """Discriminator conv: [Blur when downsampling] -> EqualConv2d -> [FusedLeakyReLU].

    With `activate`, the bias lives in the FusedLeakyReLU and the conv has none (rosinality's layout: keys
    `0.weight`, `1.bias`; with downsampling `0.kernel`, `1.weight`, `2.bias`).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        bias: bool = True,
        activate: bool = True,
    ):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            excess = (len(blur_kernel) - factor) + (kernel_size - 1)
            # (2, 2) for a 3x3 conv, (1, 1) for the 1x1 skip: blur, then a stride-2 conv without padding.
            layers.append(Blur(blur_kernel, pad=((excess + 1) // 2, excess // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Discriminator residual block that halves the resolution: (main + skip) / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, blur_kernel=blur_kernel,
                              activate=False, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)
