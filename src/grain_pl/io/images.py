"""The one place that maps between images and tensors: 8-bit pixels, PIL images, image files and size policies.

The quantizer and every PNG reader/writer use `to_uint8` / `from_uint8`, so an LR image that is written as a
PNG and read back is bit-identical to the tensor the decoder consumed. The data, the codec and the evaluation
read image files (`load_rgb_image`), convert PIL images (`pil_to_signed`, `uint8_to_pil`, ...) and bring them
to size (`fit_image`) through this module only, so a photo becomes the same tensor wherever it enters.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "DETERMINISTIC_RESIZE_POLICIES",
    "IMAGE_EXTENSIONS",
    "LEVELS",
    "RESIZE_POLICIES",
    "MAX_RESIZE_PIXELS",
    "BadImageFileError",
    "ImageListing",
    "ImageSizeError",
    "ImageTooLargeError",
    "ResizePolicy",
    "check_fit",
    "check_image_header",
    "check_resize_policy",
    "check_uint8_image",
    "decode_image_bytes",
    "describe_skipped",
    "fit_image",
    "from_uint8",
    "list_image_files",
    "scan_image_files",
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


# Why `scan_image_files` left an entry out (the summaries group the skipped entries by these reasons).
HIDDEN = "hidden, name starting with '.'"
BROKEN_LINK = "broken symbolic link"
SEEN_FOLDER = "folder already searched, a symbolic link loop or a second link to it"
NOT_A_FILE = "not a regular file"


@dataclass
class ImageListing:
    """The image files under `root` (sorted by relative path) and what was left out: (path, reason) pairs."""

    root: Path
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def summary(self) -> str:
        return describe_skipped(self.skipped)


def describe_skipped(skipped: Iterable[tuple[str | os.PathLike, str]]) -> str:
    """'skipped 3: 2 hidden, name starting with '.' (e.g. a/.x.png); 1 broken symbolic link (b.png)', or ''."""
    by_reason: dict[str, list[str]] = {}
    for path, reason in skipped:
        by_reason.setdefault(reason, []).append(str(path))
    if not by_reason:
        return ""
    parts = []
    for reason, paths in by_reason.items():
        example = paths[0] if len(paths) == 1 else f"e.g. {paths[0]}"
        parts.append(f"{len(paths)} {reason} ({example})")
    return f"skipped {sum(len(paths) for paths in by_reason.values())}: " + "; ".join(parts)


def scan_image_files(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS,
                     exclude: Sequence[tuple[str | os.PathLike, str]] = ()) -> ImageListing:
    """The image files under `root`, recursively, and the entries left out with the reason.

    Suffixes match case-insensitively (`.JPG` counts). Symbolic links to folders are followed, each real folder
    searched once, real folders before linked ones (a link loop, or a second path to a folder, is skipped and
    reported). Left out and reported:
    hidden image files and hidden folders (name starting with "."; macOS `._name.jpg` resource forks carry an
    image suffix but hold no image), broken symbolic links, image-named entries that are not regular files,
    folders that cannot be opened, and the `exclude` folders ((folder, reason) pairs, e.g. the output folder),
    which are not searched. Files with other suffixes are ignored silently.

    Raises:
        FileNotFoundError: `root` does not exist or is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist or is not a folder")
    wanted = {suffix.lower() for suffix in extensions}
    excluded = {Path(folder).resolve(): reason for folder, reason in exclude}
    listing = ImageListing(root)
    searched: set[tuple[int, int]] = set()  # (device, inode) of every folder searched

    def excluded_reason(path: Path) -> str | None:
        if not excluded:
            return None
        real = path.resolve()
        return next((reason for folder, reason in excluded.items() if real == folder or folder in real.parents),
                    None)

    def enter(folder: Path) -> None:
        try:
            status = folder.stat()
        except OSError as error:
            listing.skipped.append((folder, f"folder that cannot be opened: {error.strerror or error}"))
            return
        if (status.st_dev, status.st_ino) in searched:
            listing.skipped.append((folder, SEEN_FOLDER))
        else:
            walk(folder)

    def walk(folder: Path) -> None:
        try:
            status = folder.stat()
            entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
        except OSError as error:
            listing.skipped.append((folder, f"folder that cannot be opened: {error.strerror or error}"))
            return
        searched.add((status.st_dev, status.st_ino))
        for entry in entries:
            path = Path(entry.path)
            hidden = entry.name.startswith(".")
            try:
                is_folder = entry.is_dir()  # follows symbolic links
            except OSError:
                is_folder = False
            if is_folder:
                if hidden:
                    listing.skipped.append((path, HIDDEN))
                elif (reason := excluded_reason(path)) is not None:
                    listing.skipped.append((path, reason))
                elif entry.is_symlink():
                    linked.append(path)  # after the real folders: a link to one of them is the second path
                else:
                    enter(path)
                continue
            if entry.is_symlink() and not os.path.exists(path):  # dangling, or a loop of file links
                if not hidden:
                    listing.skipped.append((path, BROKEN_LINK))
                continue
            if Path(entry.name).suffix.lower() not in wanted:
                continue
            if hidden:
                listing.skipped.append((path, HIDDEN))
            elif not path.is_file():
                listing.skipped.append((path, NOT_A_FILE))
            elif (reason := excluded_reason(path)) is not None:
                listing.skipped.append((path, reason))
            else:
                listing.files.append(path)

    linked: list[Path] = []
    walk(root)
    while linked:
        enter(linked.pop(0))
    # Sort on the relative POSIX path so the order is the same on every machine and wherever the folder lives.
    listing.files.sort(key=lambda path: path.relative_to(root).as_posix())
    return listing


def list_image_files(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under `root`, recursively, sorted by their path relative to `root` (`scan_image_files`,
    without the report of what was left out).

    Raises:
        FileNotFoundError: `root` does not exist or is not a folder.
        ValueError: `root` holds no image file.
    """
    listing = scan_image_files(root, extensions)
    if not listing.files:
        raise no_images_error(listing, extensions)
    return listing.files


def no_images_error(listing: ImageListing, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> ValueError:
    wanted = sorted({suffix.lower() for suffix in extensions})
    skipped = f"; {listing.summary()}" if listing.skipped else ""
    return ValueError(f"no image files under {listing.root} (looked recursively for {', '.join(wanted)}){skipped}")


def check_image_header(path: str | os.PathLike, max_pixels: int | None = None) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding the pixels.

    max_pixels: refuse larger images as possible decompression bombs (default: `PIL.Image.MAX_IMAGE_PIXELS`, the
        limit the codec applies; Pillow itself only warns between one and two times it).
    Raises BadImageFileError naming the file.
    """
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception as error:  # as in load_rgb_image: Pillow raises many types for foreign data
        raise BadImageFileError(path, f"{type(error).__name__}: {error}") from error
    if width <= 0 or height <= 0:
        raise BadImageFileError(path, f"empty image size {width}x{height}")
    if limit is not None and width * height > limit:
        raise BadImageFileError(path, f"refusing to decode a possible decompression bomb: {width}x{height} = "
                                      f"{width * height} pixels, more than PIL.Image.MAX_IMAGE_PIXELS = {limit}")
    return width, height


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


class ImageTooLargeError(ValueError):
    """Bringing an image to size would allocate more than MAX_RESIZE_PIXELS at once. Names the image."""

    def __init__(self, name: str | os.PathLike, width: int, height: int, size: int, policy: str, pixels: int
                 ) -> None:
        super().__init__(f"image {name} ({width}x{height}) is too extreme to bring to {size}x{size} with "
                         f"'{policy}': it would need {pixels} pixels at once, more than MAX_RESIZE_PIXELS = "
                         f"{MAX_RESIZE_PIXELS}")
        self.name, self.width, self.height, self.size, self.policy = str(name), width, height, size, policy
        self.pixels = pixels


# The most pixels one resize may hold at once. Pillow resamples in two passes, horizontally first, into an image
# as wide as the output and as tall as the source rows it reads; a stretched 1 x 1,000,000 image would need
# 1024 x 1,000,000 pixels there. 2**27 pixels are 512 MiB (Pillow keeps RGB in 4 bytes a pixel).
MAX_RESIZE_PIXELS = 1 << 27


@dataclass(frozen=True)
class _Resample:
    """How `fit_image` brings an image to size: Pillow's antialiased bilinear resize of the source region `box` to
    width x height (none when `box` is None), then the crop `crop` (left, top, right, bottom) of the result;
    `transposed`: the resize runs on the transposed image (Pillow's vertical pass first)."""

    width: int
    height: int
    box: tuple[float, float, float, float] | None
    crop: tuple[int, int, int, int] | None = None
    transposed: bool = False


def _pass_pixels(out_width: int, out_height: int, box_height: float, source_height: int) -> int:
    """Pixels Pillow holds in a horizontal-first resize: the intermediate image (output width x the source rows
    the box and the filter's support cover) plus the output."""
    support = max(box_height / out_height, 1.0)  # the bilinear filter's support, scaled when shrinking
    rows = min(source_height, math.ceil(box_height + 2 * support) + 2)
    return out_width * rows + out_width * out_height


def _plan_fit(width: int, height: int, size: int, policy: str, draw_offset=None) -> _Resample:
    """How `fit_image` brings a width x height image to size x size under "resize", "center_crop" or "random_crop",
    from the sizes alone. Raises ImageTooLargeError (naming no image) before anything is allocated."""
    if policy == "resize":
        plan = _Resample(size, size, (0.0, 0.0, float(width), float(height)))
    else:
        # torchvision's resize of the shorter side to `size` (int() of the longer side), then its crop anchors
        if width <= height:
            scaled_width, scaled_height = size, int(size * height / width)
        else:
            scaled_width, scaled_height = int(size * width / height), size
        if policy == "center_crop":
            top = int(round((scaled_height - size) / 2.0))
            left = int(round((scaled_width - size) / 2.0))
        else:
            top, left = draw_offset(scaled_height - size + 1, scaled_width - size + 1)
        crop = (left, top, left + size, top + size)
        if (scaled_width, scaled_height) == (width, height):  # torchvision returns the image unscaled
            return _Resample(size, size, None, crop)
        plan = _Resample(scaled_width, scaled_height, (0.0, 0.0, float(width), float(height)), crop)
        if _pass_pixels(scaled_width, scaled_height, height, height) + size * size > MAX_RESIZE_PIXELS:
            # Scaling the whole image would not fit (a 1 x 1,000,000 image scales to 1024 x 1,024,000,000): resample
            # only the source region of the square. Pillow takes the box in float32, so a pixel can differ by one
            # level from scaling first; images that fit keep the exact scale-then-crop result.
            x_scale, y_scale = width / scaled_width, height / scaled_height
            plan = _Resample(size, size, (left * x_scale, top * y_scale, (left + size) * x_scale,
                                          (top + size) * y_scale))
    left, top, right, bottom = plan.box
    vertical_first = _pass_pixels(plan.height, plan.width, right - left, width)
    horizontal_first = _pass_pixels(plan.width, plan.height, bottom - top, height)
    if horizontal_first <= MAX_RESIZE_PIXELS:
        return plan
    if vertical_first <= MAX_RESIZE_PIXELS:  # e.g. stretching a 1 x 1,000,000 image: shrink its long side first
        return _Resample(plan.width, plan.height, plan.box, plan.crop, transposed=True)
    raise ImageTooLargeError("<image>", width, height, size, policy, min(horizontal_first, vertical_first))


def _random_offset(rows: int, columns: int) -> tuple[int, int]:
    top = int(torch.randint(0, rows, ()).item())
    left = int(torch.randint(0, columns, ()).item())
    return top, left


def check_fit(width: int, height: int, size: int, policy: str, name: str | os.PathLike = "<image>") -> None:
    """Raise what `fit_image` would raise for a width x height image (ImageSizeError, ImageTooLargeError), from
    the size alone: lets a caller check a whole folder's headers before it decodes anything."""
    check_resize_policy(policy)
    if (width, height) == (size, size):
        return
    if policy == "error":
        raise ImageSizeError(name, width, height, size)
    try:
        _plan_fit(width, height, size, "center_crop" if policy == "random_crop" else policy)
    except ImageTooLargeError as error:
        raise ImageTooLargeError(name, width, height, size, policy, error.pixels) from None


def fit_image(image: Image.Image, size: int, policy: str, name: str | os.PathLike = "<image>") -> Image.Image:
    """Bring an RGB image to size x size. Images already that size are returned untouched under every policy
    (CelebA-HQ at 1024 keeps its exact pixels; the official Resize((1024, 1024)) is a no-op there too).

    policy: "error" (an ImageSizeError naming `name` and both sizes), "resize" (antialiased bilinear, the
    official behaviour; stretches non-square images), "center_crop" / "random_crop" (shorter side scaled to
    `size`, then the central / a random square; the random one draws from torch's RNG, seeded per worker).
    The crops resample only the source region of the square. ImageTooLargeError (naming `name`) where a resize
    would hold more than MAX_RESIZE_PIXELS at once, checked before anything is allocated.
    """
    check_resize_policy(policy)
    width, height = image.size
    if (width, height) == (size, size):
        return image
    if policy == "error":
        raise ImageSizeError(name, width, height, size)
    try:
        plan = _plan_fit(width, height, size, policy, _random_offset)
    except ImageTooLargeError as error:
        raise ImageTooLargeError(name, width, height, size, policy, error.pixels) from None
    if plan.box is not None and plan.transposed:
        left, top, right, bottom = plan.box
        flipped = image.transpose(Image.Transpose.TRANSPOSE)
        resized = flipped.resize((plan.height, plan.width), Image.Resampling.BILINEAR, box=(top, left, bottom, right))
        image = resized.transpose(Image.Transpose.TRANSPOSE)
    elif plan.box is not None:
        # Pillow's antialiased bilinear, as torchvision's resize of a PIL image calls it (transforms.Resize).
        image = image.resize((plan.width, plan.height), Image.Resampling.BILINEAR, box=plan.box)
    return image if plan.crop is None else image.crop(plan.crop)
