"""Image files -> HR tensors in [-1, 1]: checking files, and the dataset. Listing, decoding and the size policies
live in `grain_pl.io.images`, shared with the codec and the evaluation.

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

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from grain_pl.io.images import (
    IMAGE_EXTENSIONS,
    RESIZE_POLICIES,
    BadImageFileError,
    ResizePolicy,
    check_resize_policy,
    fit_image,
    list_image_files,
    load_rgb_image,
    pil_to_signed,
)

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

BadFilePolicy = Literal["skip", "error"]
FileCheck = Literal["none", "header", "decode"]

# How many offending paths a warning or error message shows before it says "... and N more".
_MAX_PATHS_IN_MESSAGE = 5


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
        check_resize_policy(resize)
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
        image = fit_image(image, self.image_size, self.resize, path)
        if self.hflip and torch.rand(()) < 0.5:
            image = TF.horizontal_flip(image)
        return {"hr": pil_to_signed(image), "path": path}

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
