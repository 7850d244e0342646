"""Less memory for a training step (autograd on), with a switch per lever; `MemoryOptions.baseline()` is the
modules' plain forward.

A training step keeps, for its backward pass, every activation that an operation needs to compute gradients.
At 1024 px most of them are full-size maps of the HR-side layers. The levers (all on by default, each exact
up to float rounding: tests/networks/test_training_memory.py compares values and gradients with the plain
forward at 1e-5):

- `fusion_parts`: a fusion branch's first conv runs over the decoder and the prior feature separately, with the
  squeeze-excitation gate folded into the conv weights (`conv(cat(a, b) * gate)` is the sum of the two parts'
  convs with gated weights). The concatenated and the gated copies (two 96-channel maps at 1024^2) are never
  built; what the convs keep are the two features, which are kept anyway.
- `head_strips`: the fusion's merge and head (5 convs at 1024^2, up to 224 channels in) run in the forward pass
  without autograd, in strips; the backward pass recomputes them strip by strip with a halo (as many rows as the
  head has convs) and backpropagates each strip's rows. Nothing of the head is kept (1.5-2.4 GiB at 1024); the
  price is one more forward of the head, paid for by computing the convs of the nearest-upscaled branches at
  their own resolution (`polyphase`, 2.25x fewer multiply-adds at x2, 4x at x4).
- `generator_checkpoint_size`: StyleGAN2's levels from this size up are recomputed in the backward pass (the
  prior is frozen; its high-resolution levels have few channels, so recomputing them is cheap).
- `encoder_checkpoint`: the encoder's HR-side convs (the full-size conv and the first strided one) likewise.
- `decoder_checkpoint_size`: the decoder scales from this size up likewise (off by default: they are the most
  expensive to recompute).

The stages apply two more (`GrainStage(memory=...)`): `y_inv_graph=False` computes the decoder's image head
without autograd where no loss reads `y_inv` (the final stage); `frozen_decoder_inference` runs the frozen decoder
of stages 2 and 3 through the inference path (`grain_pl.networks.inference`, the one `GRAIN.decode` takes: equal up
to float summation order, faster, and in strips; not with `DecodeOptions.bf16`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MemoryOptions:
    """How a training forward (autograd on) keeps memory down. `MemoryOptions.baseline()`: the plain forward."""

    fusion_parts: bool = True
    head_strips: int | None = 128  # rows per strip of the fusion head's recomputation; None: autograd keeps it all
    polyphase: bool = True  # convs of nearest-upscaled maps at the low resolution (inside the head strips)
    generator_checkpoint_size: int | None = 512  # None: StyleGAN2 keeps its activations
    encoder_checkpoint: bool = True
    decoder_checkpoint_size: int | None = None  # None: the decoder keeps its activations
    y_inv_graph: bool = False  # stages whose losses never read y_inv: False computes its head without autograd
    frozen_decoder_inference: bool = True  # stages 2-3: the frozen decoder through grain_pl.networks.inference

    def __post_init__(self) -> None:
        if self.head_strips is not None and (self.head_strips < 8 or self.head_strips % 8):
            raise ValueError(f"MemoryOptions.head_strips must be a multiple of 8 (>= 8) or None, "
                             f"got {self.head_strips}")
        for name in ("generator_checkpoint_size", "decoder_checkpoint_size"):
            value = getattr(self, name)
            if value is not None and (value < 1 or value & (value - 1)):
                raise ValueError(f"MemoryOptions.{name} must be a power of two or None, got {value}")

    @classmethod
    def baseline(cls) -> MemoryOptions:
        return cls(fusion_parts=False, head_strips=None, polyphase=False, generator_checkpoint_size=None,
                   encoder_checkpoint=False, decoder_checkpoint_size=None, y_inv_graph=True,
                   frozen_decoder_inference=False)


# ----- convs -----
def gated_conv_over_parts(conv: nn.Conv2d, parts: Sequence[torch.Tensor], gate: torch.Tensor) -> torch.Tensor:
    """`conv(torch.cat(parts, dim=1) * gate)` for a per-sample, per-channel `gate` (B, C, 1, 1), with the gate
    folded into the weights: each part is convolved by its weight slice times its gates (a grouped conv over the
    batch), so neither the concatenation nor the gated copy is built, and autograd keeps only the parts."""
    batch = parts[0].shape[0]
    out_channels, _, kernel_height, kernel_width = conv.weight.shape
    out = None
    start = 0
    for part in parts:
        width = part.shape[1]
        weight = conv.weight[:, start:start + width].unsqueeze(0) * gate[:, start:start + width].view(
            batch, 1, width, 1, 1)
        grouped = part.reshape(1, batch * width, *part.shape[2:])
        term = F.conv2d(grouped, weight.reshape(batch * out_channels, width, kernel_height, kernel_width), None,
                        conv.stride, conv.padding, conv.dilation, groups=batch)
        out = term if out is None else out.add_(term)
        start += width
    if start != conv.in_channels:
        raise ValueError(f"parts have {start} channels in all, the conv expects {conv.in_channels}")
    out = out.view(batch, out_channels, *out.shape[2:])
    return out if conv.bias is None else out + conv.bias.view(1, -1, 1, 1)


def upsampled_conv(x: torch.Tensor, weight: torch.Tensor, factor: int) -> torch.Tensor:
    """`conv2d(interpolate(x, scale_factor=factor, mode="nearest"), weight, padding=1)` for a 3x3 `weight`,
    computed at x's resolution (`phase_convolutions`) and assembled by pixel shuffle (differentiable, no in-place
    writes)."""
    from grain_pl.networks.inference import phase_convolutions

    phases = dict(phase_convolutions(x, weight, factor))
    stacked = torch.stack([phases[row, col] for row in range(factor) for col in range(factor)], dim=2)
    return F.pixel_shuffle(stacked.flatten(1, 2), factor)


# ----- recomputation in strips -----
class _StripRecompute(torch.autograd.Function):
    """Rows of a map computed strip by strip without autograd; the backward recomputes each strip (with its halo)
    under autograd and backpropagates its rows. `spec` holds the plain settings; `tensors` are the inputs (the only
    tensors kept for the backward pass), then the parameters."""

    @staticmethod
    def forward(ctx, spec: dict, *tensors: torch.Tensor) -> torch.Tensor:
        ctx.spec = spec
        device_type = tensors[0].device.type
        # the recomputation runs under the forward's autocast state, as torch.utils.checkpoint does
        ctx.autocast = None
        if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
            ctx.autocast = (device_type, torch.get_autocast_dtype(device_type))
        ctx.save_for_backward(*tensors[:spec["inputs"]])
        ctx.parameters = tensors[spec["inputs"]:]
        out = None
        with torch.no_grad():
            for top, bottom in strips(spec):
                piece = strip_rows(spec, tensors[:spec["inputs"]], top, bottom, grad=False)[0]
                if out is None:
                    out = piece.new_empty((piece.shape[0], piece.shape[1], spec["height"], piece.shape[3]))
                out[:, :, top:bottom] = piece
                del piece
        return out

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        spec = ctx.spec
        inputs = ctx.saved_tensors
        parameters = ctx.parameters
        input_grads = [torch.zeros_like(x) if ctx.needs_input_grad[1 + index] else None
                       for index, x in enumerate(inputs)]
        parameter_grads: list[torch.Tensor | None] = [None] * len(parameters)
        wanted_parameters = [index for index, p in enumerate(parameters)
                             if ctx.needs_input_grad[1 + len(inputs) + index]]
        for top, bottom in strips(spec):
            autocast = torch.autocast(*ctx.autocast) if ctx.autocast else contextlib.nullcontext()
            with torch.enable_grad(), autocast:
                out, leaves, rows = strip_rows(spec, inputs, top, bottom, grad=True,
                                               needs=[grad is not None for grad in input_grads])
            targets = [leaf for leaf in leaves if leaf is not None] + [parameters[i] for i in wanted_parameters]
            if not targets:
                break
            grads = torch.autograd.grad(out, targets, grad_output[:, :, top:bottom], allow_unused=True)
            position = 0
            for index, leaf in enumerate(leaves):
                if leaf is None:
                    continue
                grad = grads[position]
                position += 1
                if grad is not None:
                    low, high = rows[index]
                    if low is None:
                        input_grads[index] += grad
                    else:
                        input_grads[index][:, :, low:high] += grad
            for index in wanted_parameters:
                grad = grads[position]
                position += 1
                if grad is not None:
                    parameter_grads[index] = grad if parameter_grads[index] is None else parameter_grads[index] + grad
            del out, grads
        return (None, *input_grads, *parameter_grads)


def strips(spec: dict) -> list[tuple[int, int]]:
    rows, height = spec["rows"], spec["height"]
    return [(top, min(height, top + rows)) for top in range(0, height, rows)]


def strip_rows(spec: dict, inputs: Sequence[torch.Tensor], top: int, bottom: int, grad: bool,
               needs: Sequence[bool] | None = None):
    """The output rows top..bottom: the function run on rows top-halo..bottom+halo of every input (each at its
    own resolution, `factors`; None: a whole tensor such as a gate), the halo cut off again."""
    height, halo = spec["height"], spec["halo"]
    strip_top, strip_bottom = max(0, top - halo), min(height, bottom + halo)
    sliced, leaves, rows = [], [], []
    for index, (x, factor) in enumerate(zip(inputs, spec["factors"])):
        if factor is None:
            low = high = None
            part = x
        else:
            low, high = strip_top // factor, strip_bottom // factor
            part = x[:, :, low:high]
        rows.append((low, high))
        if grad and needs is not None and needs[index]:
            part = part.detach().requires_grad_()
            leaves.append(part)
        else:
            leaves.append(None)
        sliced.append(part)
    out = spec["function"](*sliced)[:, :, top - strip_top:bottom - strip_top]
    return out, leaves, rows


def recompute_in_strips(function: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
                        factors: Sequence[int | None], parameters: Sequence[torch.Tensor], height: int, halo: int,
                        rows: int) -> torch.Tensor:
    """`function(*inputs)` (an output of `height` rows), keeping only `inputs` for the backward pass.

    `function` may use only 3x3 'same' convs (at most `halo` in sequence), point-wise operations and nearest
    upscaling: input `i` has height / factors[i] rows (None: not a map, passed whole). `parameters`: every
    parameter `function` uses (their gradients are computed strip by strip and summed). Strip edges are whole rows
    of every input (`rows` and `halo` are rounded up to the largest factor)."""
    step = max([factor for factor in factors if factor is not None] or [1])
    spec = {"function": function, "factors": list(factors), "height": height,
            "halo": -(-halo // step) * step, "rows": -(-rows // step) * step, "inputs": len(inputs)}
    return _StripRecompute.apply(spec, *inputs, *parameters)
