"""The codec's PNG files: 8-bit RGB pixels + grain_pl's text chunks -> PNG bytes, and the text chunks back.

An LR PNG is the smallest lossless PNG Pillow writes (optimize=True, zlib level 9) and carries no timestamp, so
the same pixels and metadata give the same bytes. Decoded HR PNGs use zlib's default level (`HR_COMPRESS_LEVEL`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from io import BytesIO
from pathlib import Path

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from grain_pl.codec.jobs import CodecError
from grain_pl.io.images import uint8_to_pil

__all__ = ["HR_COMPRESS_LEVEL", "check_exact_lr", "check_thumbnail", "lossy_lr_reason", "lr_png_bytes", "png_bytes",
           "read_png_text"]

# zlib level for decoded HR PNGs: these are big (1024x1024) and not what the codec stores, so the default level
# (fast, deterministic) rather than the slow maximum used for LR PNGs.
HR_COMPRESS_LEVEL = 6


def png_bytes(pixels: torch.Tensor | Image.Image, text: Mapping[str, str] | None, *, optimize: bool,
              compress_level: int) -> bytes:
    """A (3, H, W) uint8 tensor or an 8-bit RGB image as PNG bytes, with `text` as PNG text chunks."""
    image = pixels if isinstance(pixels, Image.Image) else uint8_to_pil(pixels)
    if image.mode != "RGB":
        raise ValueError(f"expected an 8-bit RGB image, got mode {image.mode}")
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value, zip=len(value) > 64)  # long values (the config) as compressed zTXt
    buffer = BytesIO()
    image.save(buffer, format="PNG", optimize=optimize, compress_level=compress_level, pnginfo=info)
    return buffer.getvalue()


def lr_png_bytes(lr_uint8: torch.Tensor | Image.Image, metadata: Mapping[str, str] | None = None) -> bytes:
    """The smallest lossless 8-bit RGB PNG Pillow writes (optimize=True, compress_level=9) of a (3, H, W) uint8
    tensor (or RGB image), with `metadata` as PNG text chunks. No timestamp: the same pixels give the same bytes.
    """
    return png_bytes(lr_uint8, metadata, optimize=True, compress_level=9)


def read_png_text(path: str | os.PathLike) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG file; {} for other files."""
    with Image.open(path) as image:
        return dict(getattr(image, "text", {}) or {})


# Modes whose pixels convert to 8-bit RGB exactly (alpha ones only when every pixel is opaque).
_EXACT_MODES = ("RGB", "L", "P", "1", "RGBA", "LA", "PA")
_HEADER_BYTES = 1 << 16  # enough for a PNG's IHDR and a WebP's chunk list


def _compression_reason(image: Image.Image, header: bytes) -> str | None:
    if image.format in ("JPEG", "MPO", "JPEG2000"):
        return f"{image.format} is a lossy format"
    if image.format == "WEBP" and header[12:16] != b"VP8L" and (b"VP8 " in header or b"VP8L" not in header):
        return "lossy WebP"
    if image.format == "TIFF" and "jpeg" in str(image.info.get("compression", "")):
        return "JPEG-compressed TIFF"
    return None


def lossy_lr_reason(image: Image.Image, header: bytes = b"", lossy_compression: bool = False) -> str | None:
    """Why `image` (opened from a file whose first bytes are `header`) cannot be the exact LR `grain encode`
    wrote, or None: a lossy format (JPEG, lossy WebP; allowed with `lossy_compression`, as for a thumbnail to
    upscale), more than 8 bits per channel (Pillow would truncate a 48-bit PNG), transparent pixels (they would be
    composited on white), a mode without exact RGB levels."""
    reason = None if lossy_compression else _compression_reason(image, header)
    if reason is not None:
        return reason
    if image.format == "PNG" and header[12:16] == b"IHDR" and len(header) > 24 and header[24] > 8:
        return f"{header[24]} bits per channel (encode writes 8)"
    if image.mode not in _EXACT_MODES:
        return f"mode {image.mode}" + (" (more than 8 bits per channel)" if image.mode.startswith(("I", "F")) else "")
    too_big = Image.MAX_IMAGE_PIXELS is not None and image.width * image.height > Image.MAX_IMAGE_PIXELS
    if (image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info) and not too_big:
        if image.convert("RGBA").getchannel("A").getextrema()[0] < 255:
            return "it has transparent pixels (alpha < 255), which decode would composite on white"
    return None


def _lr_problem(source: str | os.PathLike | Image.Image, lossy_compression: bool) -> tuple[str, str | None]:
    """(the source's name, `lossy_lr_reason` for it); files that do not open get None: the reader names their
    problem."""
    if isinstance(source, Image.Image):
        return "<image>", lossy_lr_reason(source, lossy_compression=lossy_compression)
    try:
        with open(source, "rb") as file:
            header = file.read(_HEADER_BYTES)
        with Image.open(Path(source)) as image:
            return str(source), lossy_lr_reason(image, header, lossy_compression)
    except Exception:  # noqa: BLE001 - missing, unreadable or not an image: open_rgb_image reports it
        return str(source), None


def check_exact_lr(source: str | os.PathLike | Image.Image) -> None:
    """Raise CodecError (naming the file) when `source` cannot be the exact LR `grain encode` wrote
    (`lossy_lr_reason`). Files that do not open are left to the reader, which names their problem."""
    name, reason = _lr_problem(source, lossy_compression=False)
    if reason is not None:
        raise CodecError(name, f"cannot be the exact LR that grain encode wrote: {reason}; decoding it would not "
                               "be faithful (pass --allow-lossy-lr, allow_lossy_lr=True, to decode it anyway)")


def check_thumbnail(source: str | os.PathLike | Image.Image) -> None:
    """Raise CodecError (naming the file) when `source` is not an 8-bit picture `grain upscale` can take as it is:
    decode's rules (`lossy_lr_reason`) less the lossy formats, which ordinary thumbnails are (JPEG, lossy WebP).
    Transparent pixels would be upscaled as the white they are composited on, and more than 8 bits per channel
    would be cut to 8 (a 48-bit PNG truncated), so both are refused."""
    name, reason = _lr_problem(source, lossy_compression=True)
    if reason is not None:
        raise CodecError(name, f"cannot be upscaled as it is: {reason}; save it as an 8-bit RGB image without "
                               "transparency first")
