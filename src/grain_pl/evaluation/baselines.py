"""The baselines of the evaluation, pure functions of an 8-bit HR image: resize through an 8-bit LR PNG
(bilinear, bicubic) and Pillow's JPEG/WebP/AVIF at a fixed quality or at the quality that matches GRAIN's bytes."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable

import torch

from grain_pl.evaluation.protocol import (
    DEFAULT_METHODS,
    PILLOW_SETTINGS,
    QUALITY_RANGE,
    PngEncoder,
    Reconstruction,
    avif_available,
    parse_method,
)
from grain_pl.io.images import check_uint8_image, decode_image_bytes, uint8_to_pil
from grain_pl.metrics.lr_fidelity import resize_levels

# --------------------------------------------------------------------------------------------------------------
# The LR PNG writer
# --------------------------------------------------------------------------------------------------------------


def _default_png_encoder() -> PngEncoder:
    from grain_pl.codec import lr_png_bytes  # deferred: the codec imports the whole network

    return lr_png_bytes


# --------------------------------------------------------------------------------------------------------------
# Baselines (pure functions of an 8-bit image)
# --------------------------------------------------------------------------------------------------------------


def resize_baseline(hr_uint8: torch.Tensor, lr_size: int, mode: str = "bicubic",
                    png_encoder: PngEncoder | None = None) -> Reconstruction:
    """Antialiased downscale to lr_size, 8-bit LR stored as a PNG, upscale of the decoded PNG back to HR.

    The bicubic LR is the reference thumbnail of `grain_pl.metrics.lr_fidelity` (the same call).
    """
    check_uint8_image(hr_uint8, "hr_uint8")
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"mode must be 'bilinear' or 'bicubic', got {mode!r}")
    png_encoder = png_encoder or _default_png_encoder()
    lr_uint8 = resize_levels(hr_uint8.cpu(), (lr_size, lr_size), mode)
    payload = png_encoder(lr_uint8)
    lr_stored = decode_image_bytes(payload)  # upscale what the file holds, not the tensor we encoded
    output = resize_levels(lr_stored, (hr_uint8.shape[-2], hr_uint8.shape[-1]), mode)
    return Reconstruction(mode, output, payload, "png", lr=lr_stored)


def encode_with_pillow(image_uint8: torch.Tensor, codec: str, quality: int) -> bytes:
    """The bytes of a uint8 (3, H, W) image (an HR, or an LR for --lr-codec) saved by Pillow as `codec` ("jpeg",
    "webp" or "avif") at `quality`, with the encoder settings of PILLOW_SETTINGS."""
    check_uint8_image(image_uint8, "image_uint8")
    if codec not in PILLOW_SETTINGS:
        raise ValueError(f"codec must be one of {tuple(PILLOW_SETTINGS)}, got {codec!r}")
    if codec == "avif" and not avif_available():
        raise ValueError("this Pillow cannot write AVIF (PIL.features.check('avif') is False)")
    settings = dict(PILLOW_SETTINGS[codec])
    buffer = io.BytesIO()
    uint8_to_pil(image_uint8).save(buffer, settings.pop("format"), quality=int(quality), **settings)
    return buffer.getvalue()


def jitter_slack(target_bytes: int) -> int:
    """How far an encoder's size may dip as quality grows, for the search's final scan: 32 bytes or 2 %.

    Measured dips: up to 3 bytes (JPEG, optimize=True, 32-64 px crops), 30 bytes (WebP, 1024 px, ~43 kB) and
    32 bytes (AVIF, the demo's 64 px crops, ~600 B; none at 1024 px).
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
    """JPEG/WebP/AVIF of the HR image at a fixed quality, decoded back."""
    payload = encode_with_pillow(hr_uint8, codec, quality)
    return Reconstruction(method or f"{codec}_q{quality}", decode_image_bytes(payload), payload, codec, quality)


def matched_codec_baseline(hr_uint8: torch.Tensor, codec: str, target_bytes: int,
                           method: str | None = None) -> Reconstruction:
    """JPEG/WebP/AVIF at the largest quality whose file fits in target_bytes (quality 1 if none does: over_target)."""
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
    check_uint8_image(hr_uint8, "hr_uint8")
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
