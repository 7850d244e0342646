"""`prepare_folder` (`grain prepare`): a folder of raw face photos -> a folder of aligned PNGs ready for training.

Each photo's largest face is aligned the way FFHQ faces are (`grain_pl.data.faces.ffhq_align`), with 5 landmarks
from a file (any detector; runs offline) or from insightface's SCRFD detector (e.g. `buffalo_l/det_10g.onnx`).
Relative paths are kept; existing outputs are never replaced unless asked, and a photo that fails is reported,
not fatal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from grain_pl.data.faces import (
    PADDING_MODES,
    LandmarkDetector,
    NoFaceFoundError,
    PaddingMode,
    detect_landmarks,
    ffhq_align,
    load_detector,
    load_landmarks_file,
)
from grain_pl.io.files import atomic_write, check_writable_folder
from grain_pl.io.images import BadImageFileError, describe_skipped, load_rgb_image, no_images_error, scan_image_files

__all__ = ["PrepareReport", "prepare_folder"]


@dataclass
class PrepareReport:
    """What `prepare_folder` did, by source path relative to the source folder."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)           # output existed (skip_existing=True)
    failed: dict[str, str] = field(default_factory=dict)        # relative path -> reason
    unused_landmarks: list[str] = field(default_factory=list)   # landmarks-file keys without an image
    unlisted: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) left out of the listing

    def summary(self, max_failures: int = 20) -> str:
        lines = [f"aligned {len(self.written)} image(s)"
                 + (f", skipped {len(self.skipped)} existing" if self.skipped else "")
                 + (f", {len(self.failed)} failed" if self.failed else "")]
        if self.unlisted:
            lines.append(f"  {describe_skipped(self.unlisted)}")
        for index, (name, reason) in enumerate(self.failed.items()):
            if index == max_failures:
                lines.append(f"  ... and {len(self.failed) - max_failures} more failures")
                break
            lines.append(f"  failed: {name}: {reason}")
        if self.unused_landmarks:
            shown = ", ".join(self.unused_landmarks[:5])
            more = f" and {len(self.unused_landmarks) - 5} more" if len(self.unused_landmarks) > 5 else ""
            lines.append(f"  {len(self.unused_landmarks)} landmarks entries match no image: {shown}{more}")
        return "\n".join(lines)


def _relative_key(key: str, source: Path) -> str:
    """Landmarks keys may also be absolute paths (or start with the source folder's path)."""
    path = Path(key)
    for base in (source, source.resolve()):
        if path.is_absolute() == base.is_absolute() and path.is_relative_to(base):
            return path.relative_to(base).as_posix()
    return key


def _output_path(destination: Path, relative: str) -> Path:
    return (destination / relative).with_suffix(".png")


def prepare_folder(
    source: str | Path,
    destination: str | Path,
    output_size: int = 1024,
    detector_path: str | Path | None = None,
    landmarks_file: str | Path | None = None,
    overwrite: bool = False,
    *,
    skip_existing: bool = False,
    detector: LandmarkDetector | None = None,
    detector_input_size: tuple[int, int] | None = (640, 640),
    padding: PaddingMode = "ffhq",
    supersample: int = 4,
    progress: Callable[[int, int, str], None] | None = None,
) -> PrepareReport:
    """Align every face photo under `source` into `destination` as `output_size` PNGs, keeping relative paths.

    Landmarks come from `landmarks_file` (see `load_landmarks_file`), else from `detector` (an object with SCRFD's
    `detect`), else from the SCRFD model at `detector_path` (None: insightface's model folder, buffalo_l's
    `det_10g.onnx` first). With a detector the largest face of each photo is used.

    A file that cannot be read, has no landmarks or shows no face is recorded in `report.failed` and skipped.
    Existing outputs are never replaced unless `overwrite`: the run stops before writing anything and names them
    (or, with `skip_existing`, leaves them and records them in `report.skipped`).

    Raises:
        FileExistsError: outputs exist and neither `overwrite` nor `skip_existing` is set.
        OSError: an output cannot be written (a full disk, a read-only folder), naming it; no partial file is left
            and the outputs written before it stay.
        FileNotFoundError / ValueError: no source folder, no image in it, a bad landmarks file, no detector.
    """
    source, destination = Path(source), Path(destination)
    if landmarks_file is not None and (detector is not None or detector_path is not None):
        raise ValueError("give either a landmarks file or a detector, not both")
    if detector is not None and detector_path is not None:
        raise ValueError("give either a detector object or a detector path, not both")
    if overwrite and skip_existing:
        raise ValueError("overwrite and skip_existing exclude each other")
    if output_size < 1:
        raise ValueError(f"output_size (--size) must be at least 1, got {output_size}")
    if detector_input_size is not None and min(detector_input_size) < 1:
        raise ValueError(f"detector_input_size (--det-size) must be positive, got {detector_input_size}")
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")

    # A destination inside the source must not feed earlier outputs back in.
    listing = scan_image_files(source, exclude=[(destination, "output folder, inside the source (not searched)")])
    if not listing.files:
        raise no_images_error(listing)
    files = listing.files
    relatives = [path.relative_to(source).as_posix() for path in files]

    report = PrepareReport(unlisted=[(str(path), reason) for path, reason in listing.skipped])
    targets: dict[str, Path] = {}
    claimed: dict[Path, str] = {}
    for relative in relatives:
        target = _output_path(destination, relative)
        if target in claimed:  # photo.jpg and photo.png would both become photo.png
            report.failed[relative] = f"its output {target.name} is already produced from {claimed[target]}"
            continue
        claimed[target] = relative
        targets[relative] = target
    existing = [relative for relative, target in targets.items() if target.exists()]
    if existing and not overwrite:
        if not skip_existing:
            shown = ", ".join(str(targets[relative]) for relative in existing[:5])
            more = f" and {len(existing) - 5} more" if len(existing) > 5 else ""
            raise FileExistsError(f"{len(existing)} output file(s) already exist: {shown}{more} "
                                  "(pass overwrite to replace them, or skip_existing to keep them)")
        for relative in existing:
            report.skipped.append(relative)
            del targets[relative]

    if targets:
        check_writable_folder(destination)  # a read-only destination fails before the detector loads
    landmarks: dict[str, np.ndarray] | None = None
    if landmarks_file is not None:
        landmarks = {_relative_key(key, source): points for key, points in load_landmarks_file(landmarks_file).items()}
        report.unused_landmarks = sorted(set(landmarks) - set(relatives))
    elif detector is None and targets:
        detector = load_detector(detector_path)

    for index, (relative, target) in enumerate(targets.items()):
        if progress is not None:
            progress(index, len(targets), relative)
        try:
            image = load_rgb_image(source / relative)
            if landmarks is not None:
                if relative not in landmarks:
                    raise ValueError(f"no landmarks for it in {landmarks_file}")
                points = landmarks[relative]
            else:
                points = detect_landmarks(image, detector, detector_input_size, name=relative)
            aligned = ffhq_align(image, points, output_size, padding=padding, supersample=supersample)
        except NoFaceFoundError:
            report.failed[relative] = "no face found"
            continue
        except (BadImageFileError, ValueError) as error:
            reason = error.reason if isinstance(error, BadImageFileError) else str(error)
            report.failed[relative] = reason
            continue
        # Atomic, so an interrupted run never leaves a truncated PNG behind; existing targets were refused above.
        try:
            atomic_write(target, lambda file, image=aligned: image.save(file, format="PNG"), overwrite=True)
        except OSError as error:  # a full disk, a read-only folder: nothing of this file is left, earlier ones stay
            raise OSError(error.errno, f"cannot write it: {error.strerror or error}; {len(report.written)} aligned "
                          "face(s) written before it are complete (rerun with --skip-existing to do the rest)",
                          str(target)) from error
        report.written.append(relative)
    return report
