"""Face alignment: FFHQ-style crops from 5 landmarks, the landmarks from a detector or a file.

- `ffhq_align`: the crop geometry of the FFHQ dataset (the oriented square built from the eye centres and the
  mouth centre), computed from 5 landmarks (eyes, nose, mouth corners; the nose is not used), with FFHQ's
  supersampling and its reflect-and-blur padding where the square leaves the photo. `ffhq_alignment_matrix` is the
  same map as a 2x3 matrix.
- `detect_landmarks`: the 5 landmarks of the largest face, from insightface's SCRFD detector (`load_detector`, e.g.
  `buffalo_l/det_10g.onnx`, found by `grain_pl.weights.insightface`) or any object with its `detect`.
- `load_landmarks_file`: 5 landmarks per image from a JSON or CSV file (any detector; runs offline).

A whole folder is aligned by `grain_pl.data.prepare.prepare_folder` (`grain prepare`). Alignment from given
landmarks needs only numpy and Pillow; the detector needs insightface and onnxruntime (the `faces` extra).

Coordinates: landmarks are (x, y) in pixel-index coordinates of the image as displayed (EXIF orientation
applied; pixel (0, 0)'s centre is at (0, 0)), as OpenCV, insightface and most detectors report them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from PIL import Image, ImageFilter

from grain_pl.weights.insightface import DEFAULT_INSIGHTFACE_ROOT, DETECTOR_FILES, load_zoo_model

__all__ = [
    "PADDING_MODES",
    "LandmarkDetector",
    "NoFaceFoundError",
    "PaddingMode",
    "detect_landmarks",
    "ffhq_align",
    "ffhq_alignment_matrix",
    "load_detector",
    "load_landmarks_file",
]

# FFHQ renders the crop at 4096 px and downsizes to 1024 (4x supersampling); beyond 4096 we do not supersample.
_MAX_TRANSFORM_SIZE = 4096
PaddingMode = Literal["ffhq", "reflect", "black"]
PADDING_MODES: tuple[str, ...] = ("ffhq", "reflect", "black")


class NoFaceFoundError(ValueError):
    """The detector found no face in an image (the message names the image)."""


# --------------------------------------------------------------------------------------------------------------
# FFHQ alignment
# --------------------------------------------------------------------------------------------------------------


def _as_landmarks5(landmarks5: Any) -> np.ndarray:
    points = np.asarray(landmarks5, dtype=np.float64)
    if points.shape == (10,):
        points = points.reshape(5, 2)
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise ValueError(f"landmarks must be 5 finite (x, y) points, got shape {points.shape}")
    return points


def _rot90(vector: np.ndarray) -> np.ndarray:
    """FFHQ's rot90 in image coordinates (y down): (x, y) -> (-y, x)."""
    return np.array([-vector[1], vector[0]])


def _ffhq_square(landmarks5: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FFHQ's oriented crop square in *continuous* coordinates (pixel i spans [i, i+1]).

    Returns the centre c and the half-side vectors x (to the right) and y (down, y = rot90(x)); the square's corners
    are c -/+ x -/+ y. Built from the eye centres and the mouth centre exactly as FFHQ builds it from dlib's 68
    points (there: the mean of each eye's 6 points and mouth points 48 and 54).
    """
    points = landmarks5 + 0.5  # pixel-index -> continuous coordinates
    eye_left, eye_right, _, mouth_left, mouth_right = points
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    mouth_avg = (mouth_left + mouth_right) / 2
    eye_to_mouth = mouth_avg - eye_avg
    # The crop's x axis bisects "along the eyes" and "perpendicular to eyes-mouth", which makes it robust to
    # a head that is turned; its size follows whichever of the two distances is larger.
    x = eye_to_eye - _rot90(eye_to_mouth)
    norm = float(np.hypot(*x))
    half_side = max(float(np.hypot(*eye_to_eye)) * 2.0, float(np.hypot(*eye_to_mouth)) * 1.8)
    if norm < 1e-6 or half_side < 1e-3:
        raise ValueError(f"degenerate face landmarks (eyes and mouth coincide): {landmarks5.tolist()}")
    x = x / norm * half_side
    y = _rot90(x)
    center = eye_avg + eye_to_mouth * 0.1
    return center, x, y


def ffhq_alignment_matrix(landmarks5: Any, output_size: int = 1024) -> np.ndarray:
    """The 2x3 similarity that `ffhq_align` applies: source pixel coordinates -> output pixel coordinates.

    Both in pixel-index coordinates; `matrix @ [x, y, 1]` is where a source point lands in the aligned image (use
    it to carry landmarks or boxes along).
    """
    center, x, y = _ffhq_square(_as_landmarks5(landmarks5))
    half_side = float(np.hypot(*x))
    scale = output_size / (2.0 * half_side)
    rows = np.stack([x, y]) / half_side * scale  # rotation (unit x, unit y as rows) times scale
    offset = output_size / 2.0 - rows @ center   # the square's centre goes to the output's centre
    # continuous -> pixel-index on both sides: out_idx = rows @ (src_idx + 0.5) + offset - 0.5
    offset = offset + rows @ np.array([0.5, 0.5]) - 0.5
    return np.concatenate([rows, offset[:, None]], axis=1)


def _as_pil_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"numpy images must be uint8 RGB (H, W, 3) or grey (H, W), got dtype {array.dtype}")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3):
        return Image.fromarray(array).convert("RGB")
    raise ValueError(f"numpy images must be (H, W, 3) RGB or (H, W) grey, got shape {array.shape}")


def _pad_like_ffhq(image: Image.Image, pads: tuple[int, int, int, int], quad_size: float,
                   mode: PaddingMode) -> Image.Image:
    """Extend `image` by (left, top, right, bottom) pixels by reflection; in "ffhq" mode, fade the added band
    towards a blurred copy and then towards the median colour, so mirrored content does not look like a face."""
    left, top, right, bottom = pads
    array = np.asarray(image, dtype=np.float32)
    padded = np.pad(array, ((top, bottom), (left, right), (0, 0)), mode="reflect")
    if mode == "reflect":
        return Image.fromarray(np.uint8(np.clip(np.rint(padded), 0, 255)))
    height, width = padded.shape[:2]
    rows = np.arange(height, dtype=np.float32)[:, None]
    cols = np.arange(width, dtype=np.float32)[None, :]

    def outside(coordinate: np.ndarray, before: int, after: int, length: int) -> np.ndarray:
        """How far into the added band a row/column lies, as a fraction of that band (negative inside)."""
        near = (before - coordinate) / before if before else np.full_like(coordinate, -np.inf)
        far = (coordinate - (length - 1 - after)) / after if after else np.full_like(coordinate, -np.inf)
        return np.maximum(near, far)

    depth = np.maximum(outside(cols, left, right, width), outside(rows, top, bottom, height))[..., None]
    blur_radius = max(quad_size * 0.02, 0.5)
    blurred = np.asarray(Image.fromarray(np.uint8(np.clip(np.rint(padded), 0, 255))).filter(
        ImageFilter.GaussianBlur(blur_radius)), dtype=np.float32)
    # Blur fades in over a thin band just inside the photo and is full in the padding; then the colour fades
    # to the photo's median with the depth into the padding (the FFHQ recipe's two blends).
    padded += (blurred - padded) * np.clip(depth * 3.0 + 1.0, 0.0, 1.0)
    padded += (np.median(padded, axis=(0, 1)) - padded) * np.clip(depth, 0.0, 1.0)
    return Image.fromarray(np.uint8(np.clip(np.rint(padded), 0, 255)))


def ffhq_align(image: Image.Image | np.ndarray, landmarks5: Any, output_size: int = 1024, *,
               padding: PaddingMode = "ffhq", supersample: int = 4) -> Image.Image:
    """Crop and rotate a face the way FFHQ (and CelebA-HQ) faces are aligned: an RGB `output_size` square.

    Args:
        image: a PIL image or a uint8 numpy array (H, W, 3) RGB / (H, W) grey.
        landmarks5: (5, 2) [left eye, right eye, nose, left mouth corner, right mouth corner] as (x, y) pixel
            coordinates ("left" = image left, insightface's order); the nose is not used by the recipe.
        output_size: side of the result in pixels.
        padding: where the crop square leaves the photo: "ffhq" mirrors the photo and fades the mirrored band to a
            blur of the median colour (the FFHQ recipe); "reflect" mirrors only; "black" leaves it black.
        supersample: render at `supersample * output_size` (at most 4096 px) with bilinear sampling, then downsize
            with Lanczos, as FFHQ does (4096 -> 1024); 1 renders directly.

    Eyes and mouth land where `ffhq_alignment_matrix` says: for an upright face whose mouth-eye distance m
    dominates (1.8 m > 2 * eye distance, usual), the eye midpoint sits at y = 0.4722 * size and the mouth centre
    at 0.75 * size, horizontally centred.
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    if output_size < 1 or supersample < 1:
        raise ValueError(f"output_size and supersample must be positive, got {output_size}, {supersample}")
    image = _as_pil_rgb(image)
    center, x, y = _ffhq_square(_as_landmarks5(landmarks5))
    quad_size = 2.0 * float(np.hypot(*x))

    # Shrink first when the face is much larger than the output (FFHQ's step): box-averaging by an integer factor
    # keeps the resampling below from aliasing, and maps continuous coordinates by an exact division.
    shrink = int(np.floor(quad_size / output_size * 0.5))
    if shrink > 1:
        image = image.reduce(shrink)
        center, x, y, quad_size = center / shrink, x / shrink, y / shrink, quad_size / shrink

    # Work on the region around the square only (with a border for the blur); pad where it leaves the photo.
    corners = np.stack([center - x - y, center - x + y, center + x + y, center + x - y])
    border = max(int(np.rint(quad_size * 0.1)), 3)
    box_min = np.floor(corners.min(axis=0)).astype(int) - border
    box_max = np.ceil(corners.max(axis=0)).astype(int) + border
    width, height = image.size
    crop_box = (max(box_min[0], 0), max(box_min[1], 0), min(box_max[0], width), min(box_max[1], height))
    if crop_box[2] <= crop_box[0] or crop_box[3] <= crop_box[1]:
        raise ValueError(f"the face crop lies outside the {width}x{height} image (landmarks off the image?)")
    if crop_box != (0, 0, width, height):
        image = image.crop(crop_box)
        center = center - np.array(crop_box[:2], dtype=np.float64)
    needed = (crop_box[0] - box_min[0], crop_box[1] - box_min[1], box_max[0] - crop_box[2],
              box_max[1] - crop_box[3])
    # FFHQ pads only when the square itself (not just its border) leaves the photo by more than ~4 px, and then
    # by at least 30% of the square so the fade is gradual.
    if padding != "black" and max(needed) > border - 4:
        minimum = int(np.rint(quad_size * 0.3))
        pads = tuple(max(amount, minimum) if amount > 0 else 0 for amount in needed)
        image = _pad_like_ffhq(image, pads, quad_size, padding)  # type: ignore[arg-type]
        center = center + np.array(pads[:2], dtype=np.float64)

    # Render: Pillow's AFFINE maps each output point (continuous coordinates) to a source point.
    render_size = max(min(output_size * supersample, _MAX_TRANSFORM_SIZE), output_size)
    origin = center - x - y
    step_x, step_y = 2.0 * x / render_size, 2.0 * y / render_size
    coefficients = (step_x[0], step_y[0], origin[0], step_x[1], step_y[1], origin[1])
    aligned = image.transform((render_size, render_size), Image.Transform.AFFINE, coefficients,
                              resample=Image.Resampling.BILINEAR)
    if render_size != output_size:
        aligned = aligned.resize((output_size, output_size), Image.Resampling.LANCZOS)
    return aligned


# --------------------------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------------------------


class LandmarkDetector(Protocol):
    """insightface's SCRFD interface: `detect(bgr_uint8_image, input_size=...)` -> (boxes (N, 5), kps (N, 5, 2))."""

    def detect(self, img: np.ndarray, input_size: tuple[int, int] | None = ...) -> tuple[np.ndarray, Any]: ...


def load_detector(path: str | Path | None = None, *, root: str | Path = DEFAULT_INSIGHTFACE_ROOT,
                  providers: list[str] | None = None, threshold: float = 0.5) -> LandmarkDetector:
    """insightface's SCRFD face detector with 5 keypoints (e.g. buffalo_l's `det_10g.onnx`).

    `path`: the .onnx file, a model-pack folder, or None for the first of `DETECTOR_FILES` under `<root>/models/`.
    """
    detector, model_path = load_zoo_model(path, DETECTOR_FILES, root, kind="face detection (SCRFD)",
                                          flag="--detector", purpose="Face detection", task="detection",
                                          providers=providers)
    if not getattr(detector, "use_kps", True):
        raise ValueError(f"{model_path} detects boxes only; alignment needs a detector with 5 keypoints "
                         "(SCRFD *_kps / *_bnkps, buffalo_l's det_10g.onnx)")
    detector.det_thresh = threshold
    return detector


def detect_landmarks(image: Image.Image | np.ndarray, detector: LandmarkDetector,
                     input_size: tuple[int, int] | None = (640, 640), name: str | None = None) -> np.ndarray:
    """The 5 landmarks (5, 2) of the largest face the detector finds in an RGB image.

    Raises:
        NoFaceFoundError: no face (the message names `name`, e.g. the file).
    """
    rgb = np.asarray(_as_pil_rgb(image))
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])  # insightface models read OpenCV's BGR order
    boxes, keypoints = detector.detect(bgr, input_size=input_size)
    label = name or "the image"
    if boxes is None or len(boxes) == 0:
        raise NoFaceFoundError(f"no face found in {label}")
    if keypoints is None:
        raise ValueError("the detector returns no landmarks; use one with 5 keypoints (e.g. det_10g.onnx)")
    boxes = np.asarray(boxes, dtype=np.float64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return _as_landmarks5(np.asarray(keypoints)[int(np.argmax(areas))])


# --------------------------------------------------------------------------------------------------------------
# Landmarks files
# --------------------------------------------------------------------------------------------------------------


def _normalise_key(key: str) -> str:
    key = key.strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def load_landmarks_file(path: str | Path) -> dict[str, np.ndarray]:
    """{relative image path: (5, 2) landmarks} from a JSON or CSV file.

    JSON: an object mapping each image's path (relative to the source folder, or absolute) to 5 [x, y] pairs (or 10
    numbers), e.g. {"alice/01.jpg": [[412.1, 530.7], [598.4, 527.9], [505.0, 640.2], [430.8, 742.5], [585.3, 740.1]]}.
    CSV: rows `path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5` (a header row is allowed). Point order: left eye, right eye,
    nose, left mouth corner, right mouth corner, in pixels of the image as displayed (EXIF orientation applied).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"landmarks file {path} does not exist")
    entries: dict[str, np.ndarray] = {}
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a JSON object mapping image paths to 5 [x, y] points")
        items = list(data.items())
    elif path.suffix.lower() == ".csv":
        with path.open(newline="") as handle:
            rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
        items = []
        for number, row in enumerate(rows, start=1):
            try:
                values = [float(cell) for cell in row[1:]]
            except ValueError:
                if number == 1:
                    continue  # header
                raise ValueError(f"{path}, row {number}: coordinates are not numbers: {row}") from None
            items.append((row[0], values))
    else:
        raise ValueError(f"{path}: landmarks files must be .json or .csv")
    for key, points in items:
        try:
            entries[_normalise_key(str(key))] = _as_landmarks5(points)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}, entry {key!r}: {error}") from None
    return entries
