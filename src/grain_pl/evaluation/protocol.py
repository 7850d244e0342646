"""The evaluation protocol's fixed parts: the methods and their names, the encoder settings, the columns, and
PROTOCOL, the machine-readable copy of docs/evaluation.md that every summary.json carries."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from grain_pl.io.images import DETERMINISTIC_RESIZE_POLICIES
from grain_pl.metrics.image_quality import PSNR_CAP_DB

FIXED_QUALITIES = (1, 5, 10, 40, 70)  # the paper's Table 5
DEFAULT_METHODS: tuple[str, ...] = (
    "grain", "bilinear", "bicubic", "jpeg_matched", "webp_matched",
    *(f"jpeg_q{quality}" for quality in FIXED_QUALITIES),
    *(f"webp_q{quality}" for quality in FIXED_QUALITIES),
)
METRIC_COLUMNS = ("psnr", "ssim", "psnr_y", "ssim_y", "lpips", "identity", "arcface")
LR_METRIC_COLUMNS = ("lr_psnr", "lr_ssim")  # methods that store an LR: grain, bilinear, bicubic
CSV_COLUMNS = ("file", "method", "bytes", "bpp", *METRIC_COLUMNS, *LR_METRIC_COLUMNS, "quality", "target_bytes")
RESULT_FILES = ("per_image.csv", "summary.json", "rd_plot.png")
EVALUATION_RESIZE_POLICIES = DETERMINISTIC_RESIZE_POLICIES  # no random crops in a test set

QUALITY_RANGE = (1, 100)
# Encoder settings of the codec baselines; they are part of the protocol (summary.json records them).
PILLOW_SETTINGS: dict[str, dict[str, Any]] = {
    "jpeg": {"format": "JPEG", "optimize": True},  # Huffman tables optimised: smaller files at the same quality
    "webp": {"format": "WEBP", "method": 6, "lossless": False},
}
FILE_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}

PROTOCOL: dict[str, Any] = {
    "target": "the test image decoded to 8-bit RGB (load_rgb_image), hr_size x hr_size",
    "output": "every reconstruction is 8-bit (rounded to the nearest level, clamped), as a saved PNG holds",
    "bytes": "length of the byte string the method actually stores and decodes; bpp = 8 * bytes / (H * W) of HR",
    "grain": "encode -> to_uint8 -> lr_png_bytes -> Pillow decodes the PNG (checked lossless) -> from_uint8 "
             "-> decode -> to_uint8",
    "bilinear/bicubic": "torch interpolate(antialias=True, align_corners=False) down to lr_size (Pillow's "
                        "filters, bicubic a=-0.5), 8-bit, stored with lr_png_bytes; decoded PNG upscaled by "
                        "the same call, 8-bit",
    "jpeg/webp": "Pillow at quality N; JPEG optimize=True with default 4:2:0 subsampling; WebP lossy method=6",
    "matched": "the largest quality in 1..100 whose file is <= GRAIN's LR PNG bytes: binary search, then a scan "
               "of the qualities just above within max(32 B, 2 %) of the target (encoder sizes dip by a few bytes); "
               "quality 1 and an over_target flag if even that is larger",
    "psnr/ssim": "torchmetrics, data range 1 on [0, 1] RGB; SSIM 11x11 Gaussian, sigma 1.5; PSNR per image, "
                 f"capped at {PSNR_CAP_DB:g} dB (identical images)",
    "psnr_y/ssim_y": "the same on BT.601 full-range luma (kornia rgb_to_ycbcr)",
    "lpips": "LPIPS v0.1 AlexNet at the full HR size (PerceptualLoss)",
    "identity": "cosine of IR-SE50 embeddings (IdentityLoss) when identity weights are given",
    "arcface": "arcface_model.similarity(output, target) when given",
    "lr_psnr/lr_ssim": "grain, bilinear, bicubic: the stored LR as decoded from its PNG against the reference "
                       "thumbnail of the target (the bicubic baseline's LR: interpolate bicubic, antialias=True, "
                       "to lr_size, 8-bit), as psnr/ssim (PSNR capped; SSIM empty under 6 px); "
                       "empty for the codecs, which store no LR",
    "summary": "plain mean over images per method",
}


class SimilarityModel(Protocol):
    """A face-identity hook: per-sample similarity (B,) of (B, 3, H, W) images in [-1, 1]."""

    def similarity(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


PngEncoder = Callable[[torch.Tensor], bytes]


@dataclass(frozen=True, eq=False)  # eq on tensors would be ambiguous
class Reconstruction:
    """One method's result for one image.

    output: uint8 (3, H, W), the reconstruction as a saved 8-bit image holds it.
    payload: the bytes the method stores (LR PNG, JPEG or WebP file); `num_bytes` is its length.
    quality: the JPEG/WebP quality used (None for PNG-based methods).
    target_bytes: for the matched methods, the size they were matched to.
    lr: uint8 (3, h, w), the LR as decoded from the stored PNG (None for the codecs, which store no LR).
    """

    method: str
    output: torch.Tensor
    payload: bytes
    payload_format: str
    quality: int | None = None
    target_bytes: int | None = None
    lr: torch.Tensor | None = None

    @property
    def num_bytes(self) -> int:
        return len(self.payload)

    @property
    def over_target(self) -> bool:
        return self.target_bytes is not None and self.num_bytes > self.target_bytes


@dataclass(frozen=True)
class MethodSpec:
    name: str
    kind: str  # "grain", "resize" or "codec"
    variant: str | None = None  # resize mode ("bilinear", "bicubic") or codec ("jpeg", "webp")
    quality: int | None = None  # fixed quality; None with kind "codec" means matched


_CODEC_METHOD = re.compile(r"^(jpeg|webp)_(?:q(\d+)|(matched))$")


def parse_method(name: str) -> MethodSpec:
    """"grain", "bilinear", "bicubic", "jpeg_matched", "webp_matched", "jpeg_qN", "webp_qN" (N in 1..100)."""
    if name == "grain":
        return MethodSpec(name, "grain")
    if name in ("bilinear", "bicubic"):
        return MethodSpec(name, "resize", name)
    match = _CODEC_METHOD.match(name)
    if match:
        codec, quality, _ = match.groups()
        if quality is None:
            return MethodSpec(name, "codec", codec)
        if not QUALITY_RANGE[0] <= int(quality) <= QUALITY_RANGE[1]:
            raise ValueError(f"method {name!r}: quality must be in {QUALITY_RANGE[0]}..{QUALITY_RANGE[1]}")
        return MethodSpec(name, "codec", codec, int(quality))
    raise ValueError(f"unknown method {name!r}; known: grain, bilinear, bicubic, jpeg_matched, webp_matched, "
                     "jpeg_qN, webp_qN (N = 1..100)")


def resolve_methods(methods: Sequence[str] | None, has_model: bool) -> list[MethodSpec]:
    """The methods to run, checked: None means all of DEFAULT_METHODS that apply."""
    if methods is None:  # everything that applies: without a model, neither GRAIN nor the GRAIN-matched codecs
        methods = [name for name in DEFAULT_METHODS if has_model or (name != "grain" and "matched" not in name)]
    specs = [parse_method(name) for name in dict.fromkeys(methods)]  # de-duplicated, order kept
    if not specs:
        raise ValueError("no methods to evaluate")
    names = {spec.name for spec in specs}
    if "grain" in names and not has_model:
        raise ValueError("method 'grain' needs a model")
    matched = [spec.name for spec in specs if spec.kind == "codec" and spec.quality is None]
    if matched and "grain" not in names:
        raise ValueError(f"{', '.join(matched)} match GRAIN's LR PNG size, so 'grain' must be evaluated too")
    return specs
