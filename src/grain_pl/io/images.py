"""The one place that maps between images and tensors: 8-bit pixels, PIL images, image files and size policies.

The quantizer and every PNG reader/writer use `to_uint8` / `from_uint8`, so an LR image that is written as a
PNG and read back is bit-identical to the tensor the decoder consumed. The data, the codec and the evaluation
read image files (`load_rgb_image`), convert PIL images (`pil_to_signed`, `uint8_to_pil`, ...) and bring them
to size (`fit_image`) through this module only, so a photo becomes the same tensor wherever it enters.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "DETERMINISTIC_RESIZE_POLICIES",
    "IMAGE_EXTENSIONS",
    "LEVELS",
    "RESIZE_POLICIES",
    "BadImageFileError",
    "ImageSizeError",
    "ResizePolicy",
    "check_resize_policy",
    "check_uint8_image",
    "decode_image_bytes",
    "fit_image",
    "from_uint8",
    "list_image_files",
    "load_rgb_image",
    "pil_to_signed",
    "pil_to_uint8",
    "signed_to_pil",
    "to_rgb8",
    "to_uint8",
    "uint8_to_pil",
]

LEVELS = 255

# Lower-case suffixes; matching is case-insensitive. The official code lists jpg jpeg png ppm bmp tiff;
# tif and webp are added (webp is how LSUN stores its images).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")

# What to do with an image that is not size x size (see `fit_image`). The codec and the evaluation accept the
# deterministic ones only: a random crop belongs to training data.
ResizePolicy = Literal["error", "resize", "center_crop", "random_crop"]
RESIZE_POLICIES: tuple[str, ...] = get_args(ResizePolicy)
DETERMINISTIC_RESIZE_POLICIES: tuple[str, ...] = tuple(policy for policy in RESIZE_POLICIES if policy != "random_crop")


# --------------------------------------------------------------------------------------------------------------
# [-1, 1] tensors <-> 8-bit levels <-> PIL images
# --------------------------------------------------------------------------------------------------------------


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8, rounding to the nearest level (the official code truncates; we round)."""
    return ((image.detach().float() + 1) * (LEVELS / 2)).round().clamp(0, LEVELS).to(torch.uint8)


def from_uint8(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (or integral float) levels -> [-1, 1]: level / 127.5 - 1."""
    return pixels.to(dtype) / (LEVELS / 2) - 1


def check_uint8_image(image: torch.Tensor, name: str = "image") -> None:
    """Raise a ValueError unless `image` is a uint8 (3, H, W) tensor."""
    if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"{name} must be a uint8 (3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")


def pil_to_uint8(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> uint8 (3, H, W) tensor (contiguous, on the CPU)."""
    if image.mode != "RGB":
        raise ValueError(f"expected an 8-bit RGB image, got mode {image.mode}")
    return TF.pil_to_tensor(image).contiguous()


def uint8_to_pil(pixels: torch.Tensor) -> Image.Image:
    """uint8 (3, H, W) tensor (any device) -> 8-bit RGB PIL image."""
    check_uint8_image(pixels, "pixels")
    return TF.to_pil_image(pixels.detach().cpu())


def pil_to_signed(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float32 (3, H, W) in [-1, 1] (the official ToTensor + Normalize(0.5, 0.5))."""
    return from_uint8(pil_to_uint8(image))


def signed_to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) tensor in [-1, 1] -> 8-bit RGB PIL image, each value rounded to the nearest level, so
    `signed_to_pil(pil_to_signed(x))` gives back `x` exactly."""
    return uint8_to_pil(to_uint8(image))


def decode_image_bytes(data: bytes) -> torch.Tensor:
    """A PNG/JPEG/WebP file's bytes -> uint8 (3, H, W) RGB (palette and grey PNGs expand exactly)."""
    with Image.open(BytesIO(data)) as image:
        return pil_to_uint8(image.convert("RGB"))


# --------------------------------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------------------------------


class BadImageFileError(ValueError):
    """An image file that cannot be decoded (empty, truncated, corrupt or not an image). Names the file."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"cannot read image file {path}: {reason}")
        self.path = str(path)
        self.reason = reason


def list_image_files(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under `root`, recursively, sorted by their path relative to `root`.

    Suffixes match case-insensitively (`.JPG` counts). Hidden files and folders (name starting with ".") are
    left out: macOS `._name.jpg` resource forks carry an image suffix but hold no image.

    Raises:
        FileNotFoundError: `root` does not exist or is not a folder.
        ValueError: `root` holds no image file.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    wanted = {suffix.lower() for suffix in extensions}
    found = [
        path
        for path in root.rglob("*")
        if path.suffix.lower() in wanted
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]
    if not found:
        raise ValueError(f"no image files under {root} (looked recursively for {', '.join(sorted(wanted))})")
    # Sort on the relative POSIX path so the order is the same on every machine and wherever the folder lives.
    return sorted(found, key=lambda path: path.relative_to(root).as_posix())


def load_rgb_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully into an 8-bit RGB PIL image, EXIF orientation applied.

    Conversions:
        - grayscale (`L`, `1`) -> RGB by channel replication;
        - 16-bit (`I;16*`, and `I`, which is assumed to hold 16-bit values) -> 8 bits by rounding value / 257, so
          the full 16-bit range maps to 0..255 (Pillow's own `convert("L")` clips everything above 255 to white);
        - alpha (`RGBA`, `LA`, `PA`, palette or RGB with a transparency key) -> composited on **white**: transparent
          pixels often hold arbitrary colours, and white is how viewers show such images;
        - palette (`P`) without transparency, `CMYK`, `YCbCr`, ... -> RGB through Pillow.

    Raises:
        BadImageFileError: the file is empty, truncated, corrupt or not an image.
    """
    try:
        with Image.open(path) as image:
            image.load()  # decode now, so a truncated file fails here and not somewhere inside a transform
            image = ImageOps.exif_transpose(image)  # returns a detached copy
        return to_rgb8(image)  # inside the try: a mode Pillow cannot convert counts as unreadable too
    except Exception as error:  # Pillow plugins raise many types for corrupt data (OSError, SyntaxError, ...)
        raise BadImageFileError(path, f"{type(error).__name__}: {error}") from error


def to_rgb8(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, following the rules in `load_rgb_image`."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image).astype(np.float64)
        gray = np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if "transparency" in image.info:  # palette or colour-key transparency becomes a real alpha channel
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


# --------------------------------------------------------------------------------------------------------------
# Size policies
# --------------------------------------------------------------------------------------------------------------


class ImageSizeError(ValueError):
    """An image that is not size x size under the "error" policy. Names the image and both sizes."""

    def __init__(self, name: str | os.PathLike, width: int, height: int, size: int) -> None:
        super().__init__(f"image {name} has size {width}x{height} (width x height), expected {size}x{size}; "
                         "set resize to 'resize', 'center_crop' or 'random_crop' to adapt it")
        self.name, self.width, self.height, self.size = str(name), width, height, size


def check_resize_policy(policy: str, allowed: Sequence[str] = RESIZE_POLICIES) -> None:
    if policy not in allowed:
        raise ValueError(f"resize must be one of {tuple(allowed)}, got {policy!r}")


def fit_image(image: Image.Image, size: int, policy: str, name: str | os.PathLike = "<image>") -> Image.Image:
    """Bring an RGB image to size x size. Images already that size are returned untouched under every policy
    (CelebA-HQ at 1024 keeps its exact pixels; the official Resize((1024, 1024)) is a no-op there too).

    policy: "error" (an ImageSizeError naming `name` and both sizes), "resize" (antialiased bilinear, the
    official behaviour; stretches non-square images), "center_crop" / "random_crop" (shorter side scaled to
    `size`, then the central / a random square; the random one draws from torch's RNG, seeded per worker).
    """
    check_resize_policy(policy)
    width, height = image.size
    if (width, height) == (size, size):
        return image
    if policy == "error":
        raise ImageSizeError(name, width, height, size)
    if policy == "resize":
        # Torchvision on a PIL image calls PIL's bilinear resize (antialiased), as transforms.Resize does.
        return TF.resize(image, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    scaled = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    if policy == "center_crop":
        return TF.center_crop(scaled, [size, size])
    width, height = scaled.size
    top = int(torch.randint(0, height - size + 1, ()).item())
    left = int(torch.randint(0, width - size + 1, ()).item())
    return TF.crop(scaled, top, left, size, size)
