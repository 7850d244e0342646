"""A faster, leaner inference path for the decoder and the fusion (no autograd), with a switch per optimisation.

`GRAIN.decode` takes it whenever autograd is off (`torch.no_grad`/`inference_mode`) and
`GRAIN.decode_options.enabled`; with autograd on (training) the modules' own forward runs, unchanged. Every
default switch keeps the result equal to the modules' forward up to float summation order (tests/networks/
test_inference.py: 1e-5); `bf16` changes numerics and is off unless asked for.

- `channels_last`: convolutions in NHWC, oneDNN's native layout: in NCHW every conv reorders its input and output,
  which costs as much as a small conv at 1024^2 (measured 1.2-1.6x per conv on one core).
- `concat_dense`: a dense block's conv runs once over the concatenated features instead of as a sum of one conv
  per part (the training path's memory saving, `conv_over_concat`, is slower: 1.5x at 512^2). Affordable
  because of the strips.
- `strip_rows`: the HR-side layers (the decoder scales from `strip_min_size` up, its image head, the fusion
  branches and head) run in horizontal strips of this many output rows plus a halo of as many rows as the strip
  has 3x3 convs in sequence, so no full-size map of more than the kept features' width is ever held. The squeeze-
  excitation gates need statistics of whole maps: they are computed first (channel means of maps that are
  kept anyway), then the strips are gated.
- `bf16`: autocast to bfloat16; only on CPUs with native bf16 (AVX512-BF16 or AMX, `cpu_has_native_bf16`), where
  it is faster; elsewhere it is 15-90x slower, so it is refused there.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from grain_pl.networks.blocks import LRELU_SLOPE, RESIDUAL_SCALE, RRDB, ResidualDenseBlock, SqueezeExcitation


@dataclass(frozen=True)
class DecodeOptions:
    """How `GRAIN.decode` runs without autograd. `DecodeOptions.baseline()` is the modules' own forward."""

    enabled: bool = True  # False: the modules' forward (the baseline), whatever the switches below say
    channels_last: bool = True
    concat_dense: bool = True
    strip_rows: int | None = 128  # None: whole maps
    polyphase: bool = True
    strip_min_size: int = 512  # scales smaller than this run whole (their maps are small)
    bf16: bool = False  # opt-in: changes numerics (see docs/benchmarks.md for its PSNR delta)

    def __post_init__(self) -> None:
        if self.strip_rows is not None and (self.strip_rows < 8 or self.strip_rows % 8):
            raise ValueError(f"DecodeOptions.strip_rows must be a multiple of 8 (>= 8) or None, got {self.strip_rows}")
        if self.bf16 and not cpu_has_native_bf16():
            raise ValueError("DecodeOptions.bf16 needs a CPU with native bf16 (avx512_bf16 or amx_bf16 in "
                             "/proc/cpuinfo); this one has neither, and emulated bf16 is 15-90x slower than fp32")

    @classmethod
    def baseline(cls) -> DecodeOptions:
        return cls(enabled=False)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX-BF16), read from /proc/cpuinfo (Linux)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_context(options: DecodeOptions, device: torch.device):
    if options.bf16:
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def to_layout(x: torch.Tensor, options: DecodeOptions) -> torch.Tensor:
    return x.contiguous(memory_format=memory_format(options))


def memory_format(options: DecodeOptions) -> torch.memory_format:
    return torch.channels_last if options.channels_last else torch.contiguous_format


def new_map(like: torch.Tensor, shape: tuple[int, ...], options: DecodeOptions, zeros: bool = False) -> torch.Tensor:
    out = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=memory_format(options))
    return out.zero_() if zeros else out


# ----- strips -----
def rows_in_strips(function: Callable[[int, int], torch.Tensor], height: int, halo: int, step: int,
                   like: torch.Tensor, options: DecodeOptions) -> torch.Tensor:
    """The rows 0..height of a map that `function(top, bottom)` computes for rows top..bottom, assembled strip
    by strip. `function` may only use 3x3 'same' convs (at most `halo` in sequence), point-wise operations and
    nearest upscaling by factors dividing `step` (top and bottom stay multiples of `step`).

    Each strip of output rows is computed with `halo` extra rows either side, so that the zero padding of the
    convs is applied only at the image's own borders, and the halo is cut off again.
    """
    rows = options.strip_rows
    if rows is None or height < options.strip_min_size or height <= rows:
        return function(0, height)
    rows = -(-rows // step) * step
    halo = -(-halo // step) * step
    out = None
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip_top, strip_bottom = max(0, top - halo), min(height, bottom + halo)
        strip = function(strip_top, strip_bottom)[:, :, top - strip_top:bottom - strip_top]
        if out is None:
            out = new_map(strip, (like.shape[0], strip.shape[1], height, strip.shape[3]), options)
        out[:, :, top:bottom] = strip
        del strip
    return out


def conv_depth(module: nn.Module) -> int:
    """How many 3x3 'same' convs a module applies in sequence (the halo its strips need)."""
    if isinstance(module, ResidualDenseBlock):
        return module.num_convs
    if isinstance(module, RRDB):
        return sum(conv_depth(getattr(module, f"rdb{index}")) for index in range(1, module.num_dense_blocks + 1))
    if isinstance(module, nn.Conv2d):
        return (module.kernel_size[0] - 1) // 2
    return sum(conv_depth(child) for child in module.children())


# ----- the dense blocks -----
def dense_block(block: ResidualDenseBlock, x: torch.Tensor, options: DecodeOptions,
                low: torch.Tensor | None = None, factor: int = 1) -> torch.Tensor:
    """`block(x)`. With `concat_dense`, each feature (the input, then each growth output) is convolved once, by
    the weights of every later conv that reads it stacked into one conv, and the pre-activations are accumulated:
    no concatenation is ever built, and the input's conv, the widest, has all the output channels. `low`: x
    before a nearest x`factor` upscale, whose conv is then computed at the low resolution (polyphase)."""
    if not options.concat_dense:
        return block(x)
    convs = [getattr(block, f"conv{index}") for index in range(1, block.num_convs + 1)]
    partial: list[torch.Tensor | None] = [None] * len(convs)  # pre-activation of each conv, so far
    feature = x
    start = 0
    for part in range(len(convs)):
        width = feature.shape[1]
        weight = torch.cat([conv.weight[:, start:start + width] for conv in convs[part:]])
        if part == 0 and low is not None and options.polyphase:
            result = conv_of_upsampled(low, weight, factor, options)
        else:
            result = F.conv2d(feature, weight, None, 1, 1)
        offset = 0
        for consumer in range(part, len(convs)):
            chunk = result[:, offset:offset + convs[consumer].out_channels]
            partial[consumer] = chunk if partial[consumer] is None else partial[consumer] + chunk
            offset += convs[consumer].out_channels
        del result, chunk
        start += width
        if part + 1 < len(convs):
            bias = convs[part].bias.view(1, -1, 1, 1)
            feature = F.leaky_relu_(partial[part] + bias, LRELU_SLOPE)
            partial[part] = None
    last = partial[-1] + convs[-1].bias.view(1, -1, 1, 1)
    return last.mul_(RESIDUAL_SCALE).add_(x)


def rrdb(block: RRDB, x: torch.Tensor, options: DecodeOptions, low: torch.Tensor | None = None,
         factor: int = 1) -> torch.Tensor:
    out = x
    for index in range(1, block.num_dense_blocks + 1):
        out = dense_block(getattr(block, f"rdb{index}"), out, options, low if index == 1 else None, factor)
    return out.mul_(RESIDUAL_SCALE).add_(x)  # a fresh tensor: the blocks' output


# ----- the decoder -----
def decoder_forward(decoder: nn.Module, lr: torch.Tensor, options: DecodeOptions
                    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """Same as `Decoder.forward` (up to float summation order)."""
    x = decoder.conv_first(to_layout(lr, options))
    features: dict[int, torch.Tensor] = {}
    for index, resolution in enumerate(decoder.resolutions):
        scale_module = decoder.scales[str(resolution)]
        scale = 1 if index == 0 else 2

        def run_scale(top: int, bottom: int, x=x, scale_module=scale_module, scale=scale) -> torch.Tensor:
            low = x[:, :, top // scale:bottom // scale]
            inputs = F.interpolate(low, scale_factor=scale, mode="nearest") if scale > 1 else low
            out = inputs
            for index, block in enumerate(scale_module.blocks):
                out = rrdb(block, out, options, low if index == 0 and scale > 1 else None, scale)
            return scale_module.trunk_conv(out).add_(inputs)

        x = rows_in_strips(run_scale, x.shape[2] * scale, conv_depth(scale_module), scale, x, options)
        features[resolution] = x
    y_inv = rows_in_strips(lambda top, bottom: decoder.to_hr(x[:, :, top:bottom]), x.shape[2],
                           conv_depth(decoder.to_hr), 1, x, options)
    return y_inv, features


# ----- the fusion -----
def se_gate_of_parts(se: SqueezeExcitation, parts: list[torch.Tensor]) -> torch.Tensor:
    """`se.gate(torch.cat(parts, dim=1))` from each part's channel means (a channel's mean ignores the others)."""
    pooled = torch.cat([part.mean(dim=(2, 3), keepdim=True) for part in parts], dim=1)
    return torch.sigmoid(se.fc2(torch.relu(se.fc1(pooled))))


def fusion_forward(fusion: nn.Module, decoder_features: dict[int, torch.Tensor],
                   prior_features: dict[int, torch.Tensor], options: DecodeOptions) -> torch.Tensor:
    """Same as `Fusion.forward` (up to float summation order)."""
    branches = []
    for resolution in fusion.resolutions:
        branch = fusion.branches[str(resolution)]
        decoder_feature = to_layout(decoder_features[resolution], options)
        prior_feature = prior_features[resolution]  # the generator's layout: converted strip by strip
        gate = se_gate_of_parts(branch.se, [decoder_feature, prior_feature])

        def run_branch(top: int, bottom: int, decoder_feature=decoder_feature, prior_feature=prior_feature,
                       branch=branch, gate=gate) -> torch.Tensor:
            # the two maps are concatenated strip by strip only
            pair = torch.cat([decoder_feature[:, :, top:bottom], to_layout(prior_feature[:, :, top:bottom], options)],
                             dim=1)
            return branch.convs(pair.mul_(gate))

        branches.append(rows_in_strips(run_branch, resolution, conv_depth(branch.convs), 1, decoder_feature,
                                       options))
        del decoder_feature, prior_feature, run_branch

    hr_size = fusion.resolutions[-1]
    gate = se_gate_of_parts(fusion.merge_se, branches)
    gates = torch.split(gate, [branch.shape[1] for branch in branches], dim=1)
    factors = [hr_size // resolution for resolution in fusion.resolutions]
    step = max(factors)  # strips start on whole rows of every branch

    def run_head(top: int, bottom: int) -> torch.Tensor:
        first_conv = fusion.head[0]
        if not options.polyphase:
            parts = []
            for branch, branch_gate, factor in zip(branches, gates, factors):
                part = branch[:, :, top // factor:bottom // factor] * branch_gate
                if factor > 1:
                    part = F.interpolate(part, scale_factor=factor, mode="nearest")
                parts.append(part)
            merged = torch.cat(parts, dim=1)
            del parts
            return fusion.head(merged)
        out = None
        start = 0
        for branch, branch_gate, factor in zip(branches, gates, factors):
            part = branch[:, :, top // factor:bottom // factor] * branch_gate
            weight = first_conv.weight[:, start:start + part.shape[1]]
            if factor == 1:
                term = F.conv2d(part, weight, None, 1, 1)
                out = term if out is None else out.add_(term)
                del term
            else:
                out = conv_of_upsampled(part, weight, factor, options, out)
            start += part.shape[1]
            del part
        out = out.add_(first_conv.bias.view(1, -1, 1, 1))
        return fusion.head[1:](out)

    return rows_in_strips(run_head, hr_size, conv_depth(fusion.head), step, branches[0], options)


# ----- convolutions of nearest-upscaled maps -----
def _phase_classes(factor: int) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """The output phases of a nearest x`factor` upscale followed by a 3x3 conv, grouped by which low-resolution
    offsets (-1, 0, +1) their three taps read: [(phases, offsets), ...]."""
    classes: dict[tuple[int, ...], list[int]] = {}
    for phase in range(factor):
        offsets = tuple(sorted({(phase + tap) // factor for tap in (-1, 0, 1)}))
        classes.setdefault(offsets, []).append(phase)
    return [(tuple(phases), offsets) for offsets, phases in classes.items()]


def phase_convolutions(x: torch.Tensor, weight: torch.Tensor, factor: int
                       ) -> Iterator[tuple[tuple[int, int], torch.Tensor]]:
    """The phases of `conv2d(interpolate(x, scale_factor=factor, mode="nearest"), weight, padding=1)` for a 3x3
    `weight`, each computed at x's resolution: yields `((row_phase, col_phase), map)`, where the output's
    `[..., row_phase::factor, col_phase::factor]` is `map`. Every output phase reads at most 2x2 low-resolution
    pixels, whose taps are summed into one kernel first (2.25x fewer multiply-adds at factor 2, 4x at 4; equal up to
    float summation order). Differentiable: the kernels are sums and stacks of the weight's taps."""
    height, width = x.shape[2:]
    out_channels = weight.shape[0]
    padded = F.pad(x, (1, 1, 1, 1))
    classes = _phase_classes(factor)
    for row_phases, row_offsets in classes:
        for col_phases, col_offsets in classes:
            kernels, phases = [], []
            for row_phase in row_phases:
                for col_phase in col_phases:
                    taps = [[[] for _ in col_offsets] for _ in row_offsets]
                    for tap_y in (-1, 0, 1):
                        for tap_x in (-1, 0, 1):
                            ky = row_offsets.index((row_phase + tap_y) // factor)
                            kx = col_offsets.index((col_phase + tap_x) // factor)
                            taps[ky][kx].append(weight[:, :, tap_y + 1, tap_x + 1])
                    kernels.append(torch.stack([torch.stack([sum(tap[1:], tap[0]) for tap in row], dim=-1)
                                                for row in taps], dim=-2))
                    phases.append((row_phase, col_phase))
            window = padded[:, :, 1 + row_offsets[0]:1 + row_offsets[-1] + height,
                            1 + col_offsets[0]:1 + col_offsets[-1] + width]
            result = F.conv2d(window, torch.cat(kernels))
            for index, phase in enumerate(phases):
                yield phase, result[:, index * out_channels:(index + 1) * out_channels]


def conv_of_upsampled(x: torch.Tensor, weight: torch.Tensor, factor: int, options: DecodeOptions,
                      out: torch.Tensor | None = None) -> torch.Tensor:
    """conv2d(interpolate(x, scale_factor=factor, mode="nearest"), weight, padding=1) (added to `out` if given),
    computed at x's resolution, phase by phase (`phase_convolutions`)."""
    height, width = x.shape[2:]
    add = out is not None
    if out is None:  # every output pixel belongs to exactly one phase: written once below
        out = new_map(x, (x.shape[0], weight.shape[0], height * factor, width * factor), options)
    for (row_phase, col_phase), result in phase_convolutions(x, weight, factor):
        phase = out[:, :, row_phase::factor, col_phase::factor]
        (phase.add_ if add else phase.copy_)(result)
    return out
