"""Image files -> HR tensors in [-1, 1]: listing, robust decoding, size policies.

The official GRAIN loader (`celebs_invertible_super_resolution`, see docs/method.md §3) walks a folder, sorts the
paths, opens each file as PIL RGB, applies `Resize((1024, 1024))`, `ToTensor()` and `Normalize(0.5, 0.5)`, with no
augmentation. This module does the same by default, and adds what the official code leaves to chance: grayscale,
alpha, palette and 16-bit files, EXIF orientation, explicit size policies and a policy for unreadable files.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "IMAGE_EXTENSIONS",
    "RESIZE_POLICIES",
    "BadImageFileError",
    "ImageFolderDataset",
    "find_bad_image_files",
    "list_image_files",
    "load_rgb_image",
    "warn_about_skipped_files",
]

# Lower-case suffixes; matching is case-insensitive. The official code lists jpg jpeg png ppm bmp tiff;
# tif and webp are added (webp is how LSUN stores its images).
IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp")

ResizePolicy = Literal["error", "resize", "center_crop", "random_crop"]
RESIZE_POLICIES: tuple[str, ...] = ("error", "resize", "center_crop", "random_crop")
BadFilePolicy = Literal["skip", "error"]
FileCheck = Literal["none", "header", "decode"]

# How many offending paths a warning or error message shows before it says "... and N more".
_MAX_PATHS_IN_MESSAGE = 5


class BadImageFileError(ValueError):
    """An image file that cannot be decoded (empty, truncated, corrupt or not an image). Names the file."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"cannot read image file {path}: {reason}")
        self.path = str(path)
        self.reason = reason


# --------------------------------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------------------------------


def list_image_files(root: str | Path, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
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


# --------------------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------------------


def load_rgb_image(path: str | Path) -> Image.Image:
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
        return _to_rgb8(image)  # inside the try: a mode Pillow cannot convert counts as unreadable too
    except Exception as error:  # Pillow plugins raise many types for corrupt data (OSError, SyntaxError, ...)
        raise BadImageFileError(path, f"{type(error).__name__}: {error}") from error


def _to_rgb8(image: Image.Image) -> Image.Image:
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


def _check_header(path: Path) -> str | None:
    """Cheap check: can Pillow identify the file and read its size? Returns the failure reason or None."""
    try:
        with Image.open(path) as image:
            width, height = image.size
        if width <= 0 or height <= 0:
            return f"empty image size {width}x{height}"
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None


def _check_decode(path: Path) -> str | None:
    """Thorough check: decode the whole file. Returns the failure reason or None."""
    try:
        load_rgb_image(path)
    except BadImageFileError as error:
        return error.reason
    return None


def find_bad_image_files(
    paths: Sequence[str | Path], check: FileCheck = "header", num_threads: int = 1
) -> dict[str, str]:
    """Files that fail a check, as {path: reason}, in the order of `paths`.

    Args:
        paths: files to check.
        check: "header" opens each file and reads its header only (finds empty files, non-images and files whose
            header is cut; cheap, some kB per file); "decode" decodes every file fully (also finds truncated
            pixel data; costs a full pass over the data); "none" checks nothing.
        num_threads: Pillow releases the GIL while decoding, so threads speed up the "decode" check.
    """
    if check == "none":
        return {}
    if check not in ("header", "decode"):
        raise ValueError(f"check must be 'none', 'header' or 'decode', got {check!r}")
    check_one = _check_header if check == "header" else _check_decode
    path_list = [Path(path) for path in paths]
    with ThreadPoolExecutor(max_workers=max(1, num_threads)) as pool:
        reasons = list(pool.map(check_one, path_list))
    return {str(path): reason for path, reason in zip(path_list, reasons) if reason is not None}


def warn_about_skipped_files(bad_files: dict[str, str]) -> None:
    """One warning for all skipped files: the count and the first few paths with their reasons."""
    if not bad_files:
        return
    shown = list(bad_files.items())[:_MAX_PATHS_IN_MESSAGE]
    lines = [f"  {path} ({reason})" for path, reason in shown]
    if len(bad_files) > len(shown):
        lines.append(f"  ... and {len(bad_files) - len(shown)} more")
    warnings.warn(
        f"skipping {len(bad_files)} unreadable image file(s) (on_bad_file='skip'):\n" + "\n".join(lines),
        stacklevel=2,
    )


# --------------------------------------------------------------------------------------------------------------
# Image <-> tensor (private for now; a shared images module may take them over)
# --------------------------------------------------------------------------------------------------------------


# Same formulas as grain_pl.io.images.from_uint8 / to_uint8 (level / 127.5 - 1 and its rounded inverse), so HR
# images and LR PNGs map to tensors identically. Kept private here until the data code switches to that module.


def _pil_to_signed_tensor(image: Image.Image) -> torch.Tensor:
    """8-bit RGB PIL image -> float32 tensor (3, H, W) in [-1, 1] (ToTensor + Normalize(0.5, 0.5), as official)."""
    return TF.pil_to_tensor(image).to(torch.float32) / 127.5 - 1.0


def _signed_tensor_to_pil(tensor: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [-1, 1] -> 8-bit RGB PIL image.

    Rounds to the nearest level, so `_signed_tensor_to_pil(_pil_to_signed_tensor(x))` returns `x` exactly. (The
    official test script truncates instead, which biases every pixel down by half a level on average.)
    """
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) tensor, got shape {tuple(tensor.shape)}")
    levels = ((tensor.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return TF.to_pil_image(levels)


# --------------------------------------------------------------------------------------------------------------
# Size policies
# --------------------------------------------------------------------------------------------------------------


def _fit_to_size(image: Image.Image, image_size: int, policy: str, path: str | Path) -> Image.Image:
    """Bring an RGB image to image_size x image_size under `policy` (see ImageFolderDataset).

    An image that already has the target size is returned untouched under every policy, so CelebA-HQ at 1024
    keeps its exact pixels (the official Resize((1024, 1024)) is a no-op there too).
    """
    width, height = image.size
    if (width, height) == (image_size, image_size):
        return image
    if policy == "error":
        raise ValueError(
            f"image {path} has size {width}x{height} (width x height), expected {image_size}x{image_size}; "
            "set resize to 'resize', 'center_crop' or 'random_crop' to adapt it"
        )
    if policy == "resize":
        # Torchvision on a PIL image calls PIL's bilinear resize (antialiased), which is what the official
        # transforms.Resize((1024, 1024)) does. Non-square images get stretched.
        return TF.resize(image, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    if policy in ("center_crop", "random_crop"):
        # Scale the shorter side to image_size (keeps the aspect ratio), then cut a square.
        image = TF.resize(image, image_size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        if policy == "center_crop":
            return TF.center_crop(image, [image_size, image_size])
        width, height = image.size
        top = int(torch.randint(0, height - image_size + 1, ()).item())  # torch RNG: seeded per worker
        left = int(torch.randint(0, width - image_size + 1, ()).item())
        return TF.crop(image, top, left, image_size, image_size)
    raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {policy!r}")


# --------------------------------------------------------------------------------------------------------------
# Dataset
# --------------------------------------------------------------------------------------------------------------


class ImageFolderDataset(Dataset):
    """A list of image files -> {"hr": float32 (3, image_size, image_size) in [-1, 1], "path": str}.

    Args:
        paths: the image files, in the order to index them (the splits in `grain_pl.data.splits` give them).
        image_size: HR side length in pixels (square).
        resize: what to do with an image whose size is not image_size x image_size:
            "error" raises a ValueError naming the file, its size and the expected size;
            "resize" stretches it to the target (bilinear, antialiased; the official behaviour);
            "center_crop" scales the shorter side to image_size and keeps the centre square;
            "random_crop" scales the same way and keeps a random square (use for training data only).
            Images already at the target size are never touched.
        hflip: flip horizontally with probability 0.5 (the official code does no augmentation).
        on_bad_file: "skip" replaces an unreadable file by the next readable one in the list (warning once per
            file and process) and remembers it; "error" raises BadImageFileError (a ValueError) naming the file.
            Files found bad before (see `find_bad_image_files`) should simply be left out of `paths`.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        image_size: int,
        resize: ResizePolicy = "resize",
        hflip: bool = False,
        on_bad_file: BadFilePolicy = "skip",
    ) -> None:
        if resize not in RESIZE_POLICIES:
            raise ValueError(f"resize must be one of {RESIZE_POLICIES}, got {resize!r}")
        if on_bad_file not in ("skip", "error"):
            raise ValueError(f"on_bad_file must be 'skip' or 'error', got {on_bad_file!r}")
        if image_size <= 0:
            raise ValueError(f"image_size must be positive, got {image_size}")
        self.paths = [str(path) for path in paths]
        self.image_size = image_size
        self.resize = resize
        self.hflip = hflip
        self.on_bad_file = on_bad_file
        # Files that failed to decode in this process (each DataLoader worker keeps its own).
        self.bad_files: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        path, image = self._load_readable(index)
        image = _fit_to_size(image, self.image_size, self.resize, path)
        if self.hflip and torch.rand(()) < 0.5:
            image = TF.horizontal_flip(image)
        return {"hr": _pil_to_signed_tensor(image), "path": path}

    def _load_readable(self, index: int) -> tuple[str, Image.Image]:
        """Decode paths[index]; under "skip", walk forward to the next readable file."""
        for offset in range(len(self.paths)):
            path = self.paths[(index + offset) % len(self.paths)]
            if path in self.bad_files:
                continue
            try:
                return path, load_rgb_image(path)
            except BadImageFileError as error:
                if self.on_bad_file == "error":
                    raise
                self.bad_files[path] = error.reason
                warnings.warn(f"skipping unreadable image file {path} ({error.reason})", stacklevel=2)
        raise RuntimeError(f"none of the {len(self.paths)} image files of this dataset can be read")
