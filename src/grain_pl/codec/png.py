"""The codec's PNG files: 8-bit RGB pixels + grain_pl's text chunks -> PNG bytes, and the text chunks back.

An LR PNG is the smallest lossless PNG Pillow writes (optimize=True, zlib level 9) and carries no timestamp, so
the same pixels and metadata give the same bytes. Decoded HR PNGs use zlib's default level (`HR_COMPRESS_LEVEL`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from io import BytesIO

import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from grain_pl.io.images import uint8_to_pil

__all__ = ["HR_COMPRESS_LEVEL", "lr_png_bytes", "png_bytes", "read_png_text"]

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
