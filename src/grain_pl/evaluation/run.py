"""`grain evaluate`: GRAIN against classical baselines on a folder of test images, under one metric protocol.

    from grain_pl.codec import GrainModule
    from grain_pl.evaluation import evaluate_folder
    summary = evaluate_folder(GrainModule.from_checkpoint("grain.ckpt"), "data/test", "runs/eval")
    summary = evaluate_folder(None, "data/test", "runs/eval-baselines", hr_size=1024, lr_size=16)  # no model

The protocol (also written into every summary.json, under "protocol")
---------------------------------------------------------------------

Test images. Every image file under the folder (recursively, sorted by relative path; `list_image_files`) is
decoded to 8-bit RGB (`load_rgb_image`: EXIF orientation, alpha on white, 16-bit rounded to 8) and must be
`hr_size` x `hr_size` (resize="error", the default; "resize" and "center_crop" adapt it as the data module does).
This 8-bit image is the target of every metric. `limit` keeps the first N files.

Every method goes through real files. What a method stores is a byte string that is actually produced by the
encoder and actually decoded again; "bytes" is the length of that string, and "bpp" is 8 * bytes / (H * W) with
H x W the HR size. Every output is 8-bit, exactly what a saved PNG of the reconstruction would hold.

- grain: hr -> `model.encode` -> LR levels (`to_uint8`) -> `lr_png_bytes` (the smallest lossless PNG) ->
  the PNG is decoded by Pillow (checked to give back the same levels) -> `from_uint8` -> `model.decode` ->
  `to_uint8` (round to the nearest level, clamp). bytes = the PNG file's length: 8-bit RGB, Pillow's
  optimize=True and zlib level 9, no text chunks. (Files written by `grain encode` also carry grain_pl's
  metadata chunks, the config as JSON among them, about 320 bytes more; they are not part of the image.)
- bilinear, bicubic: the HR image (float, 0..255) is downscaled to `lr_size` x `lr_size` with
  `torch.nn.functional.interpolate(mode, antialias=True, align_corners=False)`, which implements Pillow's
  convolution resize (triangle filter; Keys cubic with a = -0.5, the filter stretched by the scale factor),
  rounded to 8 bits and stored with the same `lr_png_bytes` as GRAIN; the decoded PNG is upscaled back to
  `hr_size` by the same call, then rounded to 8 bits. (Pillow itself resizes in 8-bit fixed point between its
  two passes; torch works in float, so results differ from `Image.resize` by a few levels.)
- jpeg_qN, webp_qN: the HR image saved by Pillow at quality N (JPEG: `optimize=True`, Pillow's default 4:2:0
  chroma subsampling; WebP: lossy, `method=6`, the slowest and smallest), decoded by Pillow.
- jpeg_matched, webp_matched: the same encoders at the quality that matches GRAIN's LR PNG size for this image:
  the largest quality in 1..100 whose file is <= GRAIN's bytes, found by a binary search over quality followed
  by a scan of the few qualities just above it whose files are within a slack of the target (max(32 bytes, 2 %)):
  encoder sizes are not strictly monotone in quality (libjpeg and libwebp dip by a few bytes now and then), and
  the scan makes the result equal to a scan of all 100 qualities whenever no dip exceeds the slack. If even
  quality 1 is larger, quality 1 is used and the row is flagged (its "bytes" exceeds its "target_bytes";
  summary.json counts these as "over_target"). With extreme rescaling this is the usual case at 1024 px:
  JPEG's and WebP's smallest 1024 x 1024 files take kilobytes (6-21 kB at quality 1 for scikit-image's photos
  enlarged to 1024 px), GRAIN's 16 x 16 PNG a few hundred bytes.
  The default qualities 1/5/10/40/70 are those of the paper's Table 5.

Metrics, per image and method, between the 8-bit output and the 8-bit target, both mapped to [0, 1]:

- psnr, ssim: over RGB with data range 1 (torchmetrics; SSIM with its 11x11 Gaussian window, sigma 1.5).
  PSNR is computed per image; a perfect reconstruction (MSE 0, infinite PSNR) and anything above 100 dB is
  reported as PSNR_CAP_DB = 100 dB, so per-method means stay finite and summary.json stays standard JSON.
  (100 dB is far above any lossy result: a one-level error in 60 samples of a 1024 x 1024 image is ~95 dB.)
- psnr_y, ssim_y: the same on BT.601 full-range luma Y = 0.299 R + 0.587 G + 0.114 B from kornia's
  `rgb_to_ycbcr` (`grain_pl.metrics.image_quality.luma`), not MATLAB's 16..235 studio-range Y.
- lpips: LPIPS v0.1 with AlexNet (`PerceptualLoss`, offline weights) at the full HR size, no resizing
  (as the official GRAIN code). 0 for identical images.
- identity: cosine similarity of IR-SE50 face embeddings (`IdentityLoss`, pSp's crop) when identity weights
  are given; empty otherwise.
- arcface: `arcface_model.similarity(output, target)` when such a model is given (any object with that
  method, images in [-1, 1]); empty otherwise.

Every per-image metric is the same definition as `ImageQualityMetrics` (tested); the summary is the plain mean
over images, per method.

Outputs in `output_dir`: per_image.csv (one row per image x method; columns CSV_COLUMNS), summary.json (the
means per method, this protocol, the settings and the library versions: Pillow's libjpeg/libwebp included,
since they decide the baselines' sizes) and rd_plot.png (PSNR and LPIPS against bytes, log x axis, every
method). With save_images, also images/<method>/<file>.png (the 8-bit outputs) and payloads/<method>/<file>.*
(the counted bytes). An `output_dir` that already holds results is refused unless overwrite=True.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import platform
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from grain_pl.data.datasets import ImageFolderDataset, list_image_files
from grain_pl.io.images import (
    DETERMINISTIC_RESIZE_POLICIES,
    check_resize_policy,
    decode_image_bytes,
    from_uint8,
    to_uint8,
    uint8_to_pil,
)
from grain_pl.metrics.image_quality import luma, to_unit_range

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_METHODS",
    "FIXED_QUALITIES",
    "PROTOCOL",
    "PSNR_CAP_DB",
    "RESULT_FILES",
    "Reconstruction",
    "ReconstructionScorer",
    "SimilarityModel",
    "baseline_reconstructions",
    "check_output_dir",
    "codec_baseline",
    "decode_image_bytes",
    "encode_with_pillow",
    "evaluate_folder",
    "format_summary",
    "grain_reconstruction",
    "jitter_slack",
    "largest_quality_within",
    "matched_codec_baseline",
    "parse_method",
    "plot_rate_distortion",
    "resize_baseline",
    "summarize",
]

PSNR_CAP_DB = 100.0
FIXED_QUALITIES = (1, 5, 10, 40, 70)  # the paper's Table 5
DEFAULT_METHODS: tuple[str, ...] = (
    "grain", "bilinear", "bicubic", "jpeg_matched", "webp_matched",
    *(f"jpeg_q{quality}" for quality in FIXED_QUALITIES),
    *(f"webp_q{quality}" for quality in FIXED_QUALITIES),
)
METRIC_COLUMNS = ("psnr", "ssim", "psnr_y", "ssim_y", "lpips", "identity", "arcface")
CSV_COLUMNS = ("file", "method", "bytes", "bpp", *METRIC_COLUMNS, "quality", "target_bytes")
RESULT_FILES = ("per_image.csv", "summary.json", "rd_plot.png")
EVALUATION_RESIZE_POLICIES = DETERMINISTIC_RESIZE_POLICIES  # no random crops in a test set

QUALITY_RANGE = (1, 100)
# Encoder settings of the codec baselines; they are part of the protocol (summary.json records them).
PILLOW_SETTINGS: dict[str, dict[str, Any]] = {
    "jpeg": {"format": "JPEG", "optimize": True},  # Huffman tables optimised: smaller files at the same quality
    "webp": {"format": "WEBP", "method": 6, "lossless": False},
}
FILE_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
METRIC_CHUNK = 8  # outputs scored per batch: bounds LPIPS' memory at 1024 px

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
    """

    method: str
    output: torch.Tensor
    payload: bytes
    payload_format: str
    quality: int | None = None
    target_bytes: int | None = None

    @property
    def num_bytes(self) -> int:
        return len(self.payload)

    @property
    def over_target(self) -> bool:
        return self.target_bytes is not None and self.num_bytes > self.target_bytes


# --------------------------------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------------------------------


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


def _resolve_methods(methods: Sequence[str] | None, has_model: bool) -> list[MethodSpec]:
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


# --------------------------------------------------------------------------------------------------------------
# 8-bit images <-> bytes
# --------------------------------------------------------------------------------------------------------------


def _check_uint8_image(image: torch.Tensor, name: str = "image") -> None:
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{name} must be a uint8 (3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")


def _default_png_encoder() -> PngEncoder:
    from grain_pl.codec import lr_png_bytes  # deferred: the codec imports the whole network

    return lr_png_bytes


# --------------------------------------------------------------------------------------------------------------
# Baselines (pure functions of an 8-bit image)
# --------------------------------------------------------------------------------------------------------------


def _resize_levels(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 (3, h, w) -> uint8 (3, *size): float resize with Pillow's filters, rounded and clamped."""
    resized = F.interpolate(image[None].float(), size=size, mode=mode, align_corners=False, antialias=True)
    return resized[0].round().clamp(0, 255).to(torch.uint8)


def resize_baseline(hr_uint8: torch.Tensor, lr_size: int, mode: str = "bicubic",
                    png_encoder: PngEncoder | None = None) -> Reconstruction:
    """Antialiased downscale to lr_size, 8-bit LR stored as a PNG, upscale of the decoded PNG back to HR."""
    _check_uint8_image(hr_uint8, "hr_uint8")
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    png_encoder = png_encoder or _default_png_encoder()
    lr_uint8 = _resize_levels(hr_uint8.cpu(), (lr_size, lr_size), mode)
    payload = png_encoder(lr_uint8)
    lr_stored = decode_image_bytes(payload)  # upscale what the file holds, not the tensor we encoded
    output = _resize_levels(lr_stored, (hr_uint8.shape[-2], hr_uint8.shape[-1]), mode)
    return Reconstruction(mode, output, payload, "png")


def encode_with_pillow(hr_uint8: torch.Tensor, codec: str, quality: int) -> bytes:
    """The bytes of the HR image saved by Pillow as `codec` ("jpeg" or "webp") at `quality` (PILLOW_SETTINGS)."""
    _check_uint8_image(hr_uint8, "hr_uint8")
    if codec not in PILLOW_SETTINGS:
        raise ValueError(f"codec must be one of {tuple(PILLOW_SETTINGS)}, got {codec!r}")
    settings = dict(PILLOW_SETTINGS[codec])
    buffer = io.BytesIO()
    uint8_to_pil(hr_uint8).save(buffer, settings.pop("format"), quality=int(quality), **settings)
    return buffer.getvalue()


def jitter_slack(target_bytes: int) -> int:
    """How far an encoder's size may dip as quality grows, for the search's final scan: 32 bytes or 2 %.

    Measured dips: up to 3 bytes (JPEG, optimize=True, 32-64 px crops) and 30 bytes (WebP, 1024 px, ~43 kB).
    """
    return max(32, target_bytes // 50)


def largest_quality_within(size_of: Callable[[int], int], target_bytes: int, lowest: int = QUALITY_RANGE[0],
                           highest: int = QUALITY_RANGE[1], slack: int | None = None) -> int | None:
    """The largest quality in lowest..highest with size_of(quality) <= target_bytes; None if even `lowest` is
    larger.

    A binary search (sizes grow with quality), then a scan upwards from the quality it found for as long as
    sizes stay within target_bytes + slack (default `jitter_slack`): encoders' sizes are not strictly monotone
    (libjpeg and libwebp dip by a few bytes now and then), and the scan makes the answer that of a full scan of
    every quality whenever no size ever drops by more than `slack` below that of a lower quality. It costs about
    log2(100) + 1 = 8 calls plus the few qualities whose size lies just above the target.
    """
    slack = jitter_slack(target_bytes) if slack is None else slack
    if size_of(lowest) > target_bytes:
        # A higher quality can then only fit after a dip, so only qualities within the slack are worth a look.
        first_fit = None
        for quality in range(lowest + 1, highest + 1):
            size = size_of(quality)
            if size <= target_bytes:
                first_fit = quality
                break
            if size > target_bytes + slack:
                break
        if first_fit is None:
            return None
        lowest = first_fit
    low, high = lowest, highest  # size_of(low) <= target; above `high` sizes exceed it (if sizes are monotone)
    while low < high:
        middle = (low + high + 1) // 2
        if size_of(middle) <= target_bytes:
            low = middle
        else:
            high = middle - 1
    best = low
    for quality in range(low + 1, highest + 1):  # absorb dips: the sizes just above the target
        size = size_of(quality)
        if size <= target_bytes:
            best = quality
        elif size > target_bytes + slack:
            break
    return best


def codec_baseline(hr_uint8: torch.Tensor, codec: str, quality: int, method: str | None = None) -> Reconstruction:
    """JPEG/WebP of the HR image at a fixed quality, decoded back."""
    payload = encode_with_pillow(hr_uint8, codec, quality)
    return Reconstruction(method or f"{codec}_q{quality}", decode_image_bytes(payload), payload, codec, quality)


def matched_codec_baseline(hr_uint8: torch.Tensor, codec: str, target_bytes: int,
                           method: str | None = None) -> Reconstruction:
    """JPEG/WebP at the largest quality whose file fits in target_bytes (quality 1 if none does: over_target)."""
    encoded: dict[int, bytes] = {}  # each quality is encoded once; the winner's bytes are reused

    def size_of(quality: int) -> int:
        if quality not in encoded:
            encoded[quality] = encode_with_pillow(hr_uint8, codec, quality)
        return len(encoded[quality])

    quality = largest_quality_within(size_of, target_bytes)
    quality = QUALITY_RANGE[0] if quality is None else quality
    size_of(quality)
    payload = encoded[quality]
    return Reconstruction(method or f"{codec}_matched", decode_image_bytes(payload), payload, codec, quality,
                          target_bytes=int(target_bytes))


def baseline_reconstructions(hr_uint8: torch.Tensor, lr_size: int,
                             methods: Iterable[str] = tuple(name for name in DEFAULT_METHODS if name != "grain"),
                             *, target_bytes: int | None = None,
                             png_encoder: PngEncoder | None = None) -> dict[str, Reconstruction]:
    """Every baseline of `methods` for one uint8 (3, H, W) HR image, by method name (in the order given).

    target_bytes: the size the *_matched methods aim at (GRAIN's LR PNG bytes for this image); required when
    a matched method is asked for. png_encoder: stores the resize baselines' LR (default: the codec's
    `lr_png_bytes`, the same encoder GRAIN's LR goes through).
    """
    _check_uint8_image(hr_uint8, "hr_uint8")
    hr_uint8 = hr_uint8.cpu()
    results: dict[str, Reconstruction] = {}
    for name in methods:
        spec = parse_method(name)
        if spec.kind == "grain":
            raise ValueError("'grain' is not a baseline (use grain_reconstruction)")
        if spec.kind == "resize":
            png_encoder = png_encoder or _default_png_encoder()
            results[name] = resize_baseline(hr_uint8, lr_size, spec.variant, png_encoder)
        elif spec.quality is not None:
            results[name] = codec_baseline(hr_uint8, spec.variant, spec.quality, name)
        else:
            if target_bytes is None:
                raise ValueError(f"{name} needs target_bytes (GRAIN's LR PNG size for this image)")
            results[name] = matched_codec_baseline(hr_uint8, spec.variant, target_bytes, name)
    return results


# --------------------------------------------------------------------------------------------------------------
# GRAIN through the real PNG
# --------------------------------------------------------------------------------------------------------------


@torch.inference_mode()
def grain_reconstruction(model: Any, hr_uint8: torch.Tensor, png_encoder: PngEncoder | None = None,
                         device: torch.device | str | None = None) -> Reconstruction:
    """encode -> 8-bit LR -> PNG bytes -> Pillow decodes the PNG -> decode -> 8-bit output (see the protocol)."""
    _check_uint8_image(hr_uint8, "hr_uint8")
    png_encoder = png_encoder or _default_png_encoder()
    if device is None:
        device = next(iter(model.parameters())).device if hasattr(model, "parameters") else "cpu"
    lr = model.encode(from_uint8(hr_uint8)[None].to(device))
    lr_uint8 = to_uint8(lr[0]).cpu()
    payload = png_encoder(lr_uint8)
    lr_stored = decode_image_bytes(payload)
    if not torch.equal(lr_stored, lr_uint8):
        raise RuntimeError("the LR PNG does not decode to the LR levels it was written from (PNG must be lossless)")
    decoded = model.decode(from_uint8(lr_stored)[None].to(device))
    decoded = getattr(decoded, "hr_out", decoded)  # GrainModule returns the image; the bare GRAIN a GrainOutput
    output = to_uint8(decoded[0]).cpu()
    if output.shape != hr_uint8.shape:
        raise ValueError(f"the model decoded {tuple(output.shape)}, expected the HR shape {tuple(hr_uint8.shape)}")
    return Reconstruction("grain", output, payload, "png")


# --------------------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------------------


class ReconstructionScorer:
    """Per-image metrics of 8-bit outputs against one 8-bit target (the definitions of the module docstring).

    perceptual: a `PerceptualLoss` (or any module mapping two (B, 3, H, W) [-1, 1] batches to (B,) distances);
    None builds the offline LPIPS AlexNet. identity / arcface: optional `SimilarityModel`s.
    """

    def __init__(self, perceptual: torch.nn.Module | None = None, identity: SimilarityModel | None = None,
                 arcface: SimilarityModel | None = None, device: torch.device | str = "cpu") -> None:
        if perceptual is None:
            from grain_pl.losses.perceptual import PerceptualLoss

            perceptual = PerceptualLoss(resize_to=None, reduction="none")
        self.device = torch.device(device)
        self.perceptual = perceptual.to(self.device)
        self.identity = identity.to(self.device) if isinstance(identity, torch.nn.Module) else identity
        self.arcface = arcface.to(self.device) if isinstance(arcface, torch.nn.Module) else arcface

    @torch.inference_mode()
    def score(self, outputs_uint8: torch.Tensor, target_uint8: torch.Tensor) -> list[dict[str, float | None]]:
        """outputs (N, 3, H, W) uint8 vs target (3, H, W) uint8 -> N dicts with every METRIC_COLUMNS entry."""
        _check_uint8_image(target_uint8, "target")
        rows: list[dict[str, float | None]] = []
        for chunk in outputs_uint8.split(METRIC_CHUNK):
            rows += self._score_chunk(chunk.to(self.device), target_uint8.to(self.device))
        return rows

    def _score_chunk(self, outputs_uint8: torch.Tensor, target_uint8: torch.Tensor) -> list[dict[str, float | None]]:
        outputs = from_uint8(outputs_uint8)
        targets = from_uint8(target_uint8)[None].expand_as(outputs)
        # The same mapping as ImageQualityMetrics: [-1, 1] -> [0, 1], clamped, float32.
        outputs_unit, targets_unit = to_unit_range(outputs), to_unit_range(targets)
        outputs_y, targets_y = luma(outputs_unit), luma(targets_unit)
        values: dict[str, torch.Tensor | None] = {
            "psnr": _psnr(outputs_unit, targets_unit),
            "ssim": structural_similarity_index_measure(outputs_unit, targets_unit, data_range=1.0, reduction="none"),
            "psnr_y": _psnr(outputs_y, targets_y),
            "ssim_y": structural_similarity_index_measure(outputs_y, targets_y, data_range=1.0, reduction="none"),
            "lpips": self.perceptual(outputs_unit * 2 - 1, targets_unit * 2 - 1).flatten(),
            "identity": self.identity.similarity(outputs, targets) if self.identity is not None else None,
            "arcface": self.arcface.similarity(outputs, targets) if self.arcface is not None else None,
        }
        return [{name: (None if value is None else float(value[index])) for name, value in values.items()}
                for index in range(outputs.shape[0])]


def _psnr(output_unit: torch.Tensor, target_unit: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (B,), data range 1, capped at PSNR_CAP_DB (identical images give +inf otherwise)."""
    psnr = peak_signal_noise_ratio(output_unit, target_unit, data_range=1.0, dim=(1, 2, 3), reduction="none")
    return psnr.clamp(max=PSNR_CAP_DB)


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------


def summarize(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method: the number of images, the mean of bytes, bpp and every metric (None where not computed),
    and for matched methods the mean quality and how many images even quality 1 did not fit ("over_target")."""
    summary: dict[str, dict[str, Any]] = {}
    for method in methods:
        method_rows = [row for row in rows if row["method"] == method]
        entry: dict[str, Any] = {"images": len(method_rows)}
        for column in ("bytes", "bpp", *METRIC_COLUMNS, "quality"):
            values = [row[column] for row in method_rows if row.get(column) is not None]
            entry[column] = float(np.mean(values)) if values else None
        if any(row.get("target_bytes") is not None for row in method_rows):
            entry["target_bytes"] = float(np.mean([row["target_bytes"] for row in method_rows]))
            entry["over_target"] = sum(row["bytes"] > row["target_bytes"] for row in method_rows)
        summary[method] = entry
    return summary


def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({column: _csv_value(row.get(column)) for column in CSV_COLUMNS})


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""  # not computed (e.g. identity without weights)
    if isinstance(value, float):
        return repr(value)  # shortest exact round trip
    return value


def _family(method: str) -> str:
    return method.split("_")[0] if parse_method(method).kind == "codec" else method


_STYLES = {"grain": ("tab:red", "*"), "bilinear": ("tab:green", "s"), "bicubic": ("tab:olive", "D"),
           "jpeg": ("tab:blue", "o"), "webp": ("tab:purple", "^")}


def plot_rate_distortion(summary: Mapping[str, Mapping[str, Any]], path: str | Path, title: str | None = None) -> None:
    """Two panels, PSNR and LPIPS against mean bytes (log x): one point per method; the fixed-quality points of
    a codec are joined into its curve, matched points are hollow. Uses the Agg canvas (no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    for axis, metric, label in zip(figure.subplots(1, 2), ("psnr", "lpips"),
                                   ("PSNR (dB, higher is better)", "LPIPS (lower is better)")):
        for family in dict.fromkeys(_family(method) for method in summary):
            color, marker = _STYLES.get(family, ("tab:gray", "x"))
            members = [method for method in summary if _family(method) == family
                       and summary[method].get(metric) is not None and summary[method].get("bytes")]
            fixed = sorted((method for method in members if "_q" in method), key=lambda m: summary[m]["bytes"])
            if fixed:
                axis.plot([summary[m]["bytes"] for m in fixed], [summary[m][metric] for m in fixed], color=color,
                          marker=marker, label=f"{family} (q {', '.join(m.split('_q')[1] for m in fixed)})")
            for method in members:
                if method in fixed:
                    continue
                matched = method.endswith("_matched")
                axis.scatter(summary[method]["bytes"], summary[method][metric], color=color, marker=marker,
                             s=140 if family == "grain" else 110 if matched else 60, label=method, zorder=3,
                             facecolors="none" if matched else color)
        axis.set_xscale("log")
        axis.set_xlabel("bytes per image (mean)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.savefig(path, dpi=120)


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from PIL import features

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("grain_pl", "torch", "torchvision", "torchmetrics", "kornia", "lpips", "pillow", "numpy",
                    "matplotlib"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    versions["libjpeg"] = features.version("jpg")
    versions["libwebp"] = features.version("webp")
    return versions


# --------------------------------------------------------------------------------------------------------------
# The folder evaluation
# --------------------------------------------------------------------------------------------------------------


def check_output_dir(output_dir: str | Path, overwrite: bool) -> None:
    """Refuse an output_dir that already holds results (FileExistsError), unless overwrite."""
    output_dir = Path(output_dir)
    existing = [name for name in RESULT_FILES if (output_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{output_dir} already holds results ({', '.join(existing)}); "
                              "pass overwrite=True (--overwrite) to replace them")


def _sizes(model: Any, hr_size: int | None, lr_size: int | None) -> tuple[int, int]:
    if model is None:
        if hr_size is None or lr_size is None:
            raise ValueError("without a model, give hr_size and lr_size (the baselines' HR and LR sizes)")
        return int(hr_size), int(lr_size)
    config = model.config
    for name, given, own in (("hr_size", hr_size, config.hr_size), ("lr_size", lr_size, config.lr_size)):
        if given is not None and given != own:
            raise ValueError(f"{name}={given} contradicts the model's {name}={own}")
    return int(config.hr_size), int(config.lr_size)


def _save_outputs(output_dir: Path, relative: str, reconstructions: Mapping[str, Reconstruction]) -> None:
    stem = Path(relative).with_suffix("")
    for method, reconstruction in reconstructions.items():
        image_path = output_dir / "images" / method / stem.with_suffix(".png")
        payload_path = output_dir / "payloads" / method / stem.with_suffix(FILE_SUFFIXES[reconstruction.payload_format])
        image_path.parent.mkdir(parents=True, exist_ok=True)
        payload_path.parent.mkdir(parents=True, exist_ok=True)
        uint8_to_pil(reconstruction.output).save(image_path, "PNG")
        payload_path.write_bytes(reconstruction.payload)


def evaluate_folder(
    model: Any | None,
    folder: str | Path,
    output_dir: str | Path,
    *,
    methods: Sequence[str] | None = None,
    identity_weights: str | Path | SimilarityModel | None = None,
    arcface_model: SimilarityModel | None = None,
    resize: str = "error",
    device: torch.device | str = "cpu",
    limit: int | None = None,
    hr_size: int | None = None,
    lr_size: int | None = None,
    overwrite: bool = False,
    save_images: bool = False,
    png_encoder: PngEncoder | None = None,
    perceptual: torch.nn.Module | None = None,
    settings: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate `model` (a GrainModule, or None for baselines only) and the baselines on every image of `folder`.

    Writes per_image.csv, summary.json and rd_plot.png into `output_dir` (created) and returns the summary
    dict that summary.json holds. See the module docstring for the protocol.

    Args:
        methods: names as in DEFAULT_METHODS (any jpeg_qN / webp_qN); None: all of DEFAULT_METHODS that apply
            (without a model, everything but grain and the *_matched codecs, which match GRAIN's bytes).
        identity_weights: pSp's IR-SE50 file, or an already built `IdentityLoss` (any SimilarityModel): adds
            the "identity" column (IdentityLoss.similarity).
        arcface_model: any object with .similarity(output, target) -> (B,): adds the "arcface" column.
        resize: "error", "resize" or "center_crop" for test images that are not hr_size x hr_size.
        hr_size, lr_size: required without a model; with one they must agree with model.config if given.
        overwrite: replace the results of an earlier run in output_dir (refused otherwise).
        save_images: also write every 8-bit output and every stored byte string (see the module docstring).
        png_encoder: the LR PNG writer (default: `grain_pl.codec.lr_png_bytes`).
        perceptual: an LPIPS module to reuse (default: a fresh offline `PerceptualLoss`).
        settings: extra entries for summary.json's "settings" (e.g. the checkpoint path).
        progress: called with one line per image.
    """
    check_resize_policy(resize, EVALUATION_RESIZE_POLICIES)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    specs = _resolve_methods(methods, model is not None)
    method_names = [spec.name for spec in specs]
    baseline_names = [name for name in method_names if name != "grain"]
    hr_size, lr_size = _sizes(model, hr_size, lr_size)
    output_dir = Path(output_dir)
    check_output_dir(output_dir, overwrite)
    folder = Path(folder)
    paths = list_image_files(folder)[:limit]
    if any(spec.kind in ("grain", "resize") for spec in specs):
        png_encoder = png_encoder or _default_png_encoder()

    device = torch.device(device)
    identity: SimilarityModel | None = None
    if isinstance(identity_weights, (str, Path)):
        from grain_pl.losses.identity import IdentityLoss

        identity = IdentityLoss(identity_weights)
    elif identity_weights is not None:
        identity = identity_weights
    scorer = ReconstructionScorer(perceptual, identity, arcface_model, device)
    was_training = bool(getattr(model, "training", False))
    if model is not None:
        model = model.to(device).eval()

    # on_bad_file="error": a test set with an unreadable file is a broken test set, not something to skip.
    dataset = ImageFolderDataset(paths, hr_size, resize=resize, on_bad_file="error")
    rows: list[dict[str, Any]] = []
    try:
        for index, path in enumerate(paths):
            relative = path.relative_to(folder).as_posix()
            hr_uint8 = to_uint8(dataset[index]["hr"])  # exact: the dataset maps 8-bit levels by level / 127.5 - 1
            reconstructions: dict[str, Reconstruction] = {}
            if "grain" in method_names:
                reconstructions["grain"] = grain_reconstruction(model, hr_uint8, png_encoder, device)
            target_bytes = reconstructions["grain"].num_bytes if "grain" in reconstructions else None
            reconstructions.update(baseline_reconstructions(hr_uint8, lr_size, baseline_names,
                                                            target_bytes=target_bytes, png_encoder=png_encoder))
            ordered = [reconstructions[name] for name in method_names]
            scores = scorer.score(torch.stack([item.output for item in ordered]), hr_uint8)
            for item, metrics in zip(ordered, scores):
                rows.append({"file": relative, "method": item.method, "bytes": item.num_bytes,
                             "bpp": 8.0 * item.num_bytes / (hr_uint8.shape[-2] * hr_uint8.shape[-1]), **metrics,
                             "quality": item.quality, "target_bytes": item.target_bytes})
            if save_images:
                _save_outputs(output_dir, relative, reconstructions)
            if progress is not None:
                grain_text = f", grain {target_bytes} B" if target_bytes is not None else ""
                progress(f"[{index + 1}/{len(paths)}] {relative}{grain_text}")
    finally:
        if model is not None and was_training:
            model.train()

    per_method = summarize(rows, method_names)
    summary: dict[str, Any] = {
        "methods": per_method,
        "settings": {
            "folder": str(folder), "images": len(paths), "hr_size": hr_size, "lr_size": lr_size, "resize": resize,
            "methods": method_names, "identity_weights": _describe(identity_weights),
            "arcface": _describe(arcface_model),
            "model": None if model is None else type(model).__name__,
            "model_config": _config_dict(model),
            "device": str(device), "pillow_settings": PILLOW_SETTINGS, "psnr_cap_db": PSNR_CAP_DB,
            **dict(settings or {}),
        },
        "protocol": PROTOCOL,
        "versions": _versions(),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(rows, output_dir / "per_image.csv")
    # allow_nan=False: a NaN/inf would make the file invalid JSON; the PSNR cap keeps every value finite.
    (output_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    plot_rate_distortion(per_method, output_dir / "rd_plot.png",
                         title=f"{len(paths)} images, {hr_size} px, LR {lr_size} px")
    return summary


def _config_dict(model: Any) -> dict[str, Any] | None:
    config = getattr(model, "config", None)
    if hasattr(config, "as_dict"):
        return config.as_dict()
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else None


def _describe(item: Any) -> str | None:
    """A path as itself, an object by its class name (for summary.json's settings)."""
    if item is None:
        return None
    return str(item) if isinstance(item, (str, Path)) else type(item).__name__


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table of summary["methods"] (for the CLI)."""
    header = f"{'method':<14}{'bytes':>10}{'bpp':>9}{'psnr':>8}{'ssim':>8}{'psnr_y':>8}{'lpips':>8}{'identity':>9}"
    columns = (("bytes", 10, 1), ("bpp", 9, 5), ("psnr", 8, 2), ("ssim", 8, 4), ("psnr_y", 8, 2), ("lpips", 8, 4),
               ("identity", 9, 4))
    lines = [header]
    for method, entry in summary["methods"].items():
        cells = "".join(_cell(entry.get(name), width, digits) for name, width, digits in columns)
        lines.append(f"{method:<14}{cells}")
    return "\n".join(lines)


def _cell(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None or not math.isfinite(value) else f"{value:>{width}.{digits}f}"
