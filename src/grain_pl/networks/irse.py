"""IR-SE50: the ArcFace face-recognition backbone behind GRAIN's identity loss.

The module tree mirrors the `Backbone` class that produced pSp's `model_ir_se50.pth` (TreB1eN's
InsightFace_Pytorch), so that file loads with `strict=True` and no renaming (see docs/method.md §5.4):

    input_layer   = [conv3x3 3->64, BN, PReLU]                       keys input_layer.{0,1,2}
    body.{u}      = 24 residual units (50 layers) or 49 (100 layers)
        res_layer      = [BN, conv3x3, PReLU, conv3x3 (stride), BN, (SE)]   res_layer.{0..5}
        shortcut_layer = 1x1 conv + BN where the width changes, else a parameter-free
                         MaxPool2d(1, stride) (which is only a stride-s subsampling)
    output_layer  = [BN2d, Dropout, Flatten, Linear(512*7*7 -> 512), BN1d]  output_layer.{0,3,4}

The network itself never reads files; `grain_pl.weights.irse50` converts and loads the checkpoint.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# Units per stage for each supported depth; every stage halves the resolution in its first unit.
_UNITS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    50: (3, 4, 14, 3),
    100: (3, 13, 30, 3),
}
_STAGE_WIDTHS = (64, 128, 256, 512)
_STEM_WIDTH = 64
EMBEDDING_DIM = 512
# The squeeze-excitation bottleneck divides the width by this factor (InsightFace's choice).
_SE_REDUCTION = 16
# Four stride-2 stages: 112 -> 7 (or 224 -> 14) before the flatten + linear head.
_TOTAL_STRIDE = 16
_SUPPORTED_INPUT_SIZES = (112, 224)
_MODES = ("ir", "ir_se")


class _UnitSpec(NamedTuple):
    in_channels: int
    out_channels: int
    stride: int


def unit_specs(num_layers: int) -> list[_UnitSpec]:
    """The (in, out, stride) of every residual unit, in `body` order."""
    if num_layers not in _UNITS_PER_STAGE:
        raise ValueError(f"IRSE50: num_layers must be one of {sorted(_UNITS_PER_STAGE)}, got {num_layers}")
    specs: list[_UnitSpec] = []
    in_channels = _STEM_WIDTH
    for width, count in zip(_STAGE_WIDTHS, _UNITS_PER_STAGE[num_layers]):
        specs.append(_UnitSpec(in_channels, width, 2))
        specs.extend(_UnitSpec(width, width, 1) for _ in range(count - 1))
        in_channels = width
    return specs


class SqueezeExcite(nn.Module):
    """Channel gating: global average -> 1x1 conv down -> ReLU -> 1x1 conv up -> sigmoid -> scale.

    The two 1x1 convolutions have no bias and are named `fc1`/`fc2` to match the checkpoint.
    """

    def __init__(self, channels: int, reduction: int = _SE_REDUCTION) -> None:
        super().__init__()
        squeezed = channels // reduction
        self.fc1 = nn.Conv2d(channels, squeezed, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(squeezed, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class ImprovedResidualUnit(nn.Module):
    """The "IR" pre-activation bottleneck of ArcFace: BN first, stride on the second conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, *, squeeze_excite: bool) -> None:
        super().__init__()
        if in_channels == out_channels:
            # A 1x1 max-pool is just strided subsampling; it is kept (instead of slicing) because it
            # is what the original uses, and it owns no state, so no checkpoint keys.
            self.shortcut_layer: nn.Module = nn.MaxPool2d(kernel_size=1, stride=stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        residual_layers: list[nn.Module] = [
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        if squeeze_excite:
            residual_layers.append(SqueezeExcite(out_channels))
        self.res_layer = nn.Sequential(*residual_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR / IR-SE backbone returning an L2-normalised 512-d face embedding.

    Defaults build exactly the network of pSp's `model_ir_se50.pth` (43,797,696 parameters,
    397 state-dict entries). Input: (B, 3, input_size, input_size) in [-1, 1], i.e. an aligned face
    crop; cropping and resizing a full image is the identity loss's job, not this module's.
    """

    def __init__(
        self,
        input_size: int = 112,
        num_layers: int = 50,
        mode: str = "ir_se",
        drop_ratio: float = 0.6,
        affine: bool = True,
    ) -> None:
        super().__init__()
        if input_size not in _SUPPORTED_INPUT_SIZES:
            raise ValueError(f"IRSE50: input_size must be one of {_SUPPORTED_INPUT_SIZES}, got {input_size}")
        if mode not in _MODES:
            raise ValueError(f"IRSE50: mode must be one of {_MODES}, got {mode!r}")
        self.input_size = input_size
        self.num_layers = num_layers
        self.mode = mode

        self.input_layer = nn.Sequential(
            nn.Conv2d(3, _STEM_WIDTH, kernel_size=3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(_STEM_WIDTH),
            nn.PReLU(_STEM_WIDTH),
        )
        self.body = nn.Sequential(
            *(
                ImprovedResidualUnit(spec.in_channels, spec.out_channels, spec.stride, squeeze_excite=mode == "ir_se")
                for spec in unit_specs(num_layers)
            )
        )
        final_side = input_size // _TOTAL_STRIDE
        final_width = _STAGE_WIDTHS[-1]
        # Indices 1 (Dropout) and 2 (Flatten) own no state; keeping them in the Sequential keeps
        # the checkpoint's `output_layer.3` / `output_layer.4` numbering.
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(final_width),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(final_width * final_side * final_side, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM, affine=affine),
        )

    @property
    def expected_input_shape(self) -> tuple[int, int, int]:
        return (3, self.input_size, self.input_size)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.ndim != 4 or tuple(faces.shape[1:]) != self.expected_input_shape:
            raise ValueError(
                f"IRSE50: expected input of shape (B, {', '.join(map(str, self.expected_input_shape))}), "
                f"got {tuple(faces.shape)}; crop and resize faces to {self.input_size}x{self.input_size} first"
            )
        features = self.body(self.input_layer(faces))
        embedding = self.output_layer(features)
        # The original divides by the plain L2 norm; F.normalize's 1e-12 floor only differs for an
        # all-zero embedding, where it avoids a NaN.
        return F.normalize(embedding, p=2.0, dim=1)
