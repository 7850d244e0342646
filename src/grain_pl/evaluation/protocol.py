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
CODECS = ("jpeg", "webp", "avif")  # Pillow's encoders of the codec baselines and of --lr-codec
DEFAULT_METHODS: tuple[str, ...] = (
    "grain", "bilinear", "bicubic", *(f"{codec}_matched" for codec in CODECS),
    *(f"{codec}_q{quality}" for codec in CODECS for quality in FIXED_QUALITIES),
)
METRIC_COLUMNS = ("psnr", "ssim", "psnr_y", "ssim_y", "lpips", "identity", "arcface")
LR_METRIC_COLUMNS = ("lr_psnr", "lr_ssim")  # rows that store an LR: grain, bilinear, bicubic, upscaler, --lr-codec
CSV_COLUMNS = ("file", "method", "bytes", "bpp", *METRIC_COLUMNS, *LR_METRIC_COLUMNS, "quality", "target_bytes")
RESULT_FILES = ("per_image.csv", "summary.json", "rd_plot.png")
EVALUATION_RESIZE_POLICIES = DETERMINISTIC_RESIZE_POLICIES  # no random crops in a test set

QUALITY_RANGE = (1, 100)
# Encoder settings of the codec baselines; they are part of the protocol (summary.json records them).
PILLOW_SETTINGS: dict[str, dict[str, Any]] = {
    "jpeg": {"format": "JPEG", "optimize": True},  # Huffman tables optimised: smaller files at the same quality
    "webp": {"format": "WEBP", "method": 6, "lossless": False},
    # Pillow's defaults written out (speed 6, 4:2:0), and one thread: libaom's output depends on whether it runs
    # one thread or several (1024 px astronaut, quality 50: 36784 B on one, 36644 B on 2 or 8), so a fixed count
    # keeps the bytes the same on every machine. The codec is the first libavif finds (libaom with Pillow's wheels).
    "avif": {"format": "AVIF", "speed": 6, "subsampling": "4:2:0", "max_threads": 1},
}
FILE_SUFFIXES = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "avif": ".avif"}
UPSCALER_METHOD = "grain_upscale"  # the row of --upscaler: a model decoding the bicubic baseline's stored thumbnail
LR_CODEC_SEPARATOR = "+"  # "grain+jpeg_q90": the row of GRAIN's LR re-encoded as JPEG at quality 90 (--lr-codec)

PROTOCOL: dict[str, Any] = {
    "target": "the test image decoded to 8-bit RGB (load_rgb_image), hr_size x hr_size",
    "output": "every reconstruction is 8-bit (rounded to the nearest level, clamped), as a saved PNG holds",
    "bytes": "length of the byte string the method actually stores and decodes; bpp = 8 * bytes / (H * W) of HR",
    "grain": "encode -> to_uint8 -> lr_png_bytes -> Pillow decodes the PNG (checked lossless) -> from_uint8 "
             "-> decode -> to_uint8",
    "bilinear/bicubic": "torch interpolate(antialias=True, align_corners=False) down to lr_size (Pillow's "
                        "filters, bicubic a=-0.5), 8-bit, stored with lr_png_bytes; decoded PNG upscaled by "
                        "the same call, 8-bit",
    "jpeg/webp/avif": "Pillow at quality N; JPEG optimize=True with default 4:2:0 subsampling; WebP lossy method=6; "
                      "AVIF (libavif, libaom) speed 6, 4:2:0, one encoder thread",
    "matched": "the largest quality in 1..100 whose file is <= GRAIN's LR PNG bytes: binary search, then a scan "
               "of the qualities just above within max(32 B, 2 %) of the target (encoder sizes dip by a few bytes); "
               "quality 1 and an over_target flag if even that is larger",
    "psnr/ssim": "torchmetrics, data range 1 on [0, 1] RGB; SSIM 11x11 Gaussian, sigma 1.5; PSNR per image, "
                 f"capped at {PSNR_CAP_DB:g} dB (identical images)",
    "psnr_y/ssim_y": "the same on BT.601 full-range luma (kornia rgb_to_ycbcr)",
    "lpips": "LPIPS v0.1 AlexNet at the full HR size (PerceptualLoss)",
    "identity": "cosine of IR-SE50 embeddings (IdentityLoss) when identity weights are given",
    "arcface": "arcface_model.similarity(output, target) when given",
    "lr_psnr/lr_ssim": "grain, bilinear, bicubic, grain_upscale, the --lr-codec rows: the stored LR as decoded "
                       "from its file against the reference thumbnail of the target (the bicubic baseline's LR: "
                       "interpolate bicubic, antialias=True, to lr_size, 8-bit), as psnr/ssim (PSNR capped; SSIM "
                       "empty under 6 px); empty for the codecs, which store no LR",
    "lr_codec": "--lr-codec CODEC:QUALITY, per model row (grain, grain_upscale) and the bicubic row a row "
                "ROW+CODEC_qQUALITY: the row's stored LR PNG, decoded to 8 bits, re-encoded by Pillow with the "
                "codec settings above (JPEG 4:2:0) at that quality, decoded, then the model's decode (bicubic: its "
                "own bicubic upscale); bytes = the re-encoded LR's length",
    "upscaler": "--upscaler MODEL, row grain_upscale: the bicubic baseline's stored LR PNG (the same bytes) -> "
                "Pillow decodes it -> from_uint8 -> the model's decode -> to_uint8; bytes = that PNG's length",
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
    payload: the bytes the method stores (LR PNG, or a JPEG/WebP/AVIF file: of the HR for a codec, of the LR for
        a --lr-codec row); `num_bytes` is its length.
    quality: the JPEG/WebP/AVIF quality used (None for PNG-based methods).
    target_bytes: for the matched methods, the size they were matched to.
    lr: uint8 (3, h, w), the LR as decoded from the stored file (None for the codecs, which store no LR).
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


_CODEC_METHOD = re.compile(rf"^({'|'.join(CODECS)})_(?:q(\d+)|(matched))$")


def avif_available() -> bool:
    """Whether this Pillow can write AVIF (Pillow >= 11.3 built with libavif, as its wheels are)."""
    from PIL import features

    return bool(features.check("avif"))


def parse_method(name: str) -> MethodSpec:
    """"grain", "bilinear", "bicubic", "<codec>_matched", "<codec>_qN" (codec jpeg, webp or avif; N in 1..100)."""
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
                     "avif_matched, jpeg_qN, webp_qN, avif_qN (N = 1..100)")


def resolve_methods(methods: Sequence[str] | None, has_model: bool) -> list[MethodSpec]:
    """The methods to run, checked: None means all of DEFAULT_METHODS that apply (the AVIF ones only where Pillow
    writes AVIF; asking for one where it does not is an error)."""
    if methods is None:  # everything that applies: without a model, neither GRAIN nor the GRAIN-matched codecs
        methods = [name for name in DEFAULT_METHODS if (has_model or (name != "grain" and "matched" not in name))
                   and (avif_available() or not name.startswith("avif_"))]
    specs = [parse_method(name) for name in dict.fromkeys(methods)]  # de-duplicated, order kept
    if not specs:
        raise ValueError("no methods to evaluate")
    names = {spec.name for spec in specs}
    if "grain" in names and not has_model:
        raise ValueError("method 'grain' needs a model")
    matched = [spec.name for spec in specs if spec.kind == "codec" and spec.quality is None]
    if matched and "grain" not in names:
        raise ValueError(f"{', '.join(matched)} match GRAIN's LR PNG size, so 'grain' must be evaluated too")
    avif = [spec.name for spec in specs if spec.variant == "avif"]
    if avif and not avif_available():
        raise ValueError(f"{', '.join(avif)}: this Pillow cannot write AVIF (PIL.features.check('avif') is False; "
                         "Pillow >= 11.3 with libavif can)")
    return specs


@dataclass(frozen=True)
class LrCodecSetting:
    """One --lr-codec setting: the stored LR re-encoded by Pillow as `codec` at `quality` (PILLOW_SETTINGS)."""

    codec: str
    quality: int

    @property
    def label(self) -> str:
        """Its part of a row name, as the codec baselines are named: "jpeg_q90"."""
        return f"{self.codec}_q{self.quality}"

    def row(self, model_row: str) -> str:
        """The name of the row of `model_row` ("grain", "grain_upscale") with its LR re-encoded: "grain+jpeg_q90"."""
        return f"{model_row}{LR_CODEC_SEPARATOR}{self.label}"

    def __str__(self) -> str:
        return f"{self.codec}:{self.quality}"


LR_CODEC_FORMAT = (f"CODEC:QUALITY, CODEC one of {', '.join(CODECS)} and QUALITY an integer in "
                   f"{QUALITY_RANGE[0]}..{QUALITY_RANGE[1]} (e.g. jpeg:90,webp:75)")


def parse_lr_codecs(settings: Sequence[str] | str | None) -> list[LrCodecSetting]:
    """"jpeg:90,jpeg:75" (or a sequence of such strings) -> the settings, de-duplicated in order. A ValueError
    naming the bad setting and the expected form for an unknown codec, a missing, non-integer or out-of-range
    quality, or AVIF where this Pillow cannot write it."""
    if settings is None:
        return []
    if isinstance(settings, str):
        settings = [settings]
    parsed: list[LrCodecSetting] = []
    for text in (item.strip() for entry in settings for item in entry.split(",")):
        codec, colon, quality = (part.strip() for part in text.partition(":"))
        problem = None
        if not text:
            problem = "empty setting"
        elif codec.lower() not in CODECS:
            problem = f"unknown codec {codec!r}"
        elif not colon or not quality:
            problem = "no quality"
        elif not re.fullmatch(r"[0-9]+", quality):
            problem = f"quality {quality!r} is not an integer"
        elif not QUALITY_RANGE[0] <= int(quality) <= QUALITY_RANGE[1]:
            problem = f"quality {int(quality)} is out of range"
        if problem is not None:
            raise ValueError(f"--lr-codec {text!r}: {problem}; expected {LR_CODEC_FORMAT}")
        if codec.lower() == "avif" and not avif_available():
            raise ValueError(f"--lr-codec {text!r}: this Pillow cannot write AVIF (PIL.features.check('avif') is "
                             "False; Pillow >= 11.3 with libavif can); use jpeg or webp")
        parsed.append(LrCodecSetting(codec.lower(), int(quality)))
    return list(dict.fromkeys(parsed))
