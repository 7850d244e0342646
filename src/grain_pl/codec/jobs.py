"""The codec's file side: which file goes where (`plan_jobs`), reading input images and writing outputs, and how a
problem with one file is reported (`CodecError`, `CodecReport`).

Every problem with a file is a `CodecError` (a ValueError) whose one-line message starts with the file name;
folder runs report it and go on with the next file. An existing output file is never replaced unless
`overwrite=True` (`--overwrite`); writes are atomic (`grain_pl.io.files`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps

from grain_pl.io.files import DestinationExistsError, write_bytes
from grain_pl.io.images import (
    DETERMINISTIC_RESIZE_POLICIES,
    IMAGE_EXTENSIONS,
    BadImageFileError,
    ImageSizeError,
    ImageTooLargeError,
    check_resize_policy,
    describe_skipped,
    load_rgb_image,
    no_images_error,
    scan_image_files,
    to_rgb8,
)
from grain_pl.io.images import fit_image as fit_image_to_size

__all__ = [
    "RESIZE_POLICIES",
    "CodecError",
    "CodecReport",
    "ResultCallback",
    "fit_image",
    "open_rgb_image",
    "plan_jobs",
    "write_atomically",
]

# The codec's size policies: the deterministic ones (no random crop of an image to encode).
RESIZE_POLICIES: tuple[str, ...] = DETERMINISTIC_RESIZE_POLICIES
ImageSource = Image.Image | str | os.PathLike


class CodecError(ValueError):
    """A problem with one file: the message is one line and starts with the file's path."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the underlying library said
        super().__init__(f"{self.path}: {self.reason}")


@dataclass
class CodecReport:
    """What a multi-file run did: the files written, the files that failed (with their error) and the entries
    skipped (with the reason: hidden, a broken link, an earlier output, an existing output under skip_existing)."""

    written: list[tuple[Path, Path]] = field(default_factory=list)
    failed: list[tuple[Path, CodecError]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def skipped_summary(self) -> str:
        """'skipped 3: 2 existing output (e.g. lr/a.png); 1 broken symbolic link (photos/b.jpg)', or ''."""
        return describe_skipped(self.skipped)


# Called once per input file: (source, destination or None, error or None).
ResultCallback = Callable[[Path, Path | None, CodecError | None], None]


# ----------------------------------------------------------------------------------------------------------------
# Images in, files out
# ----------------------------------------------------------------------------------------------------------------


def name_of(source: ImageSource) -> str:
    return "<image>" if isinstance(source, Image.Image) else str(source)


def open_rgb_image(source: ImageSource) -> Image.Image:
    """A file or PIL image -> 8-bit RGB PIL image, converted exactly as the training data is
    (`grain_pl.io.images.load_rgb_image`: grayscale -> RGB, 16-bit -> 8-bit (value / 257), alpha composited on
    white, palette -> RGB, EXIF orientation applied).

    Images over Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) are refused, also between one
    and two times the limit where Pillow itself only warns. Raises CodecError naming the file.
    """
    if isinstance(source, Image.Image):
        return to_rgb8(ImageOps.exif_transpose(source))  # the same mode rules as for files
    path = Path(source)
    if not path.exists():
        raise CodecError(path, "no such file")
    if path.is_dir():
        raise CodecError(path, "is a folder, not an image file")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its pixel limit; a codec fed untrusted files refuses both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return load_rgb_image(path)
    except BadImageFileError as error:
        cause = error.__cause__
        if isinstance(cause, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
            raise CodecError(path, f"refusing to decode a possible decompression bomb: {cause} "
                                   "(limit: PIL.Image.MAX_IMAGE_PIXELS)") from error
        raise CodecError(path, f"cannot read the image (truncated, corrupt or not an image): {error.reason}"
                         ) from error


def fit_image(image: Image.Image, size: int, policy: str, name: str = "<image>") -> Image.Image:
    """Bring an RGB image to size x size (`grain_pl.io.images.fit_image`) under one of the codec's policies.
    Images already that size are returned untouched under every policy.

    policy: "error" (a CodecError giving both sizes), "resize" (antialiased bilinear, stretches non-square
    images), "center_crop" (shorter side scaled to `size`, then the central square).
    """
    check_resize_policy(policy, RESIZE_POLICIES)
    try:
        return fit_image_to_size(image, size, policy, name)
    except ImageSizeError as error:
        raise CodecError(name, f"expected {size}x{size}, got {error.width}x{error.height}; pass --resize resize "
                               "(stretch) or --resize center_crop (resize=... in Python) to adapt it") from None
    except ImageTooLargeError as error:
        raise CodecError(name, f"{error.width}x{error.height} is too extreme to bring to {size}x{size} with "
                               f"--resize {policy}: it would need {error.pixels} pixels at once (limit "
                               "grain_pl.io.images.MAX_RESIZE_PIXELS)") from None


def exists_error(destination: str | os.PathLike) -> CodecError:
    return CodecError(destination, "already exists; pass --overwrite (overwrite=True) to replace it")


def write_atomically(data: bytes, destination: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write `data` to `destination` atomically (`grain_pl.io.files.write_bytes`). Without `overwrite`, an existing
    destination is left byte-identical and a CodecError is raised."""
    try:
        return write_bytes(data, destination, overwrite=overwrite)
    except DestinationExistsError:
        raise exists_error(destination) from None


# ----------------------------------------------------------------------------------------------------------------
# Which file goes where
# ----------------------------------------------------------------------------------------------------------------


def default_destination(source: Path, kind: str) -> Path:
    """Next to the source: photo.jpg -> photo.lr.png (encode); photo.lr.png -> photo.hr.png (decode);
    thumb.jpg -> thumb.hr.png (upscale)."""
    if kind == "encode":
        return source.with_name(f"{source.stem}.lr.png")
    stem = source.stem[:-3] if source.stem.endswith(".lr") else source.stem
    return source.with_name(f"{stem}.hr.png")


def _is_folder_name(output: str | os.PathLike) -> bool:
    return Path(output).is_dir() or str(output).endswith(("/", os.sep))


# encode: images -> LR PNGs; decode: LR PNGs -> HR PNGs; upscale: any thumbnail of the LR size -> HR PNGs.
JOB_KINDS = ("encode", "decode", "upscale")
EARLIER_OUTPUT = "output folder of this run, inside the input folder (not searched)"
EXISTING_OUTPUT = "existing output (skip_existing)"


def plan_jobs(inputs: Sequence[str | os.PathLike], output: str | os.PathLike | None, kind: str
              ) -> tuple[list[tuple[Path, Path]], list[tuple[Path, CodecError]], list[tuple[Path, str]]]:
    """(source, destination) pairs for inputs that are files or folders, the inputs that cannot be used, and the
    entries of input folders left out with the reason (`grain_pl.io.images.scan_image_files`).

    - one input file and `output` not a folder (an existing one, or a name ending in "/"): output is the file;
    - otherwise `output` is a folder: a file input goes to output/<stem>.png, a folder input keeps its layout
      (output/<relative path>.png); folders are searched recursively (.png for decode, images otherwise), the
      output folder left out where it lies inside an input folder;
    - no `output`: each file next to its source (photo.lr.png, photo.hr.png); a folder input needs one.
    Raises CodecError for unusable arguments (not per file): a folder input without `output`, an output folder
    that is an input folder (outputs would replace inputs), several inputs and an output named like an image file.
    """
    if kind not in JOB_KINDS:
        raise ValueError(f"kind must be one of {JOB_KINDS}, got {kind!r}")
    if not inputs:
        raise ValueError("no input files or folders given")
    sources = [Path(item) for item in inputs]
    output_path = Path(output) if output is not None else None
    if output_path is not None and len(sources) == 1 and not sources[0].is_dir() and not _is_folder_name(output):
        if output_path.suffix.lower() != ".png":
            raise CodecError(output_path, "the output must be a .png file, or a folder (end the name with /)")
        if not sources[0].exists():
            return [], [(sources[0], CodecError(sources[0], "no such file or folder"))], []
        if output_path.resolve() == sources[0].resolve():
            raise CodecError(output_path, "is the input itself; choose another output name")
        return [(sources[0], output_path)], [], []
    if output_path is not None and not _is_folder_name(output):
        if output_path.exists():
            raise CodecError(output_path, f"{len(sources)} inputs need an output folder, but this is a file")
        if output_path.suffix.lower() in IMAGE_EXTENSIONS:
            raise CodecError(output_path, f"{len(sources) if len(sources) > 1 else 'a folder'} input"
                                          f"{'s need' if len(sources) > 1 else ' needs'} an output folder, but this "
                                          "looks like an image file name; end it with / to mean a folder")

    extensions = (".png",) if kind == "decode" else IMAGE_EXTENSIONS
    jobs: list[tuple[Path, Path]] = []
    failed: list[tuple[Path, CodecError]] = []
    skipped: list[tuple[Path, str]] = []
    for source in sources:
        if source.is_dir():
            if output_path is None:
                raise CodecError(source, "a folder input needs -o/--output (the output folder)")
            if output_path.resolve() == source.resolve():
                raise CodecError(source, "is both the input and the output folder; the outputs would replace or "
                                         "mix with the inputs: choose another -o/--output")
            listing = scan_image_files(source, extensions, exclude=[(output_path, EARLIER_OUTPUT)])
            skipped.extend(listing.skipped)
            if not listing.files:
                failed.append((source, CodecError(source, str(no_images_error(listing, extensions)))))
                continue
            for file in listing.files:
                jobs.append((file, output_path / file.relative_to(source).with_suffix(".png")))
        elif source.exists():
            destination = (output_path / f"{source.stem}.png" if output_path is not None
                           else default_destination(source, kind))
            jobs.append((source, destination))
        else:
            failed.append((source, CodecError(source, "no such file or folder")))

    unique: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}
    for source, destination in jobs:
        key = destination.resolve()
        if key == source.resolve():
            failed.append((source, CodecError(source, "its output would replace it; choose another -o/--output")))
            continue
        if key in claimed:
            failed.append((source, CodecError(source, f"its output {destination} is also the output of "
                                                      f"{claimed[key]}; rename one of them")))
            continue
        claimed[key] = source
        unique.append((source, destination))
    return unique, failed, skipped


def batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
