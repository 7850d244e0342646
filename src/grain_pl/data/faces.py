"""Faces through insightface: an ArcFace identity metric, FFHQ-style alignment, and `grain prepare`.

Three things live here:

- `ArcFaceIdentity`: insightface's ArcFace recognition model (an ONNX file of its model zoo, e.g.
  `buffalo_l/w600k_r50.onnx`) as an identity *metric* for `grain evaluate`, beside the IR-SE50 of the training
  loss (`grain_pl.losses.identity`). Inputs are FFHQ/CelebA-HQ-aligned images in [-1, 1]; each is cut to the
  face box the IR-SE50 loss uses (`crop_faces`: 256 px, rows 35:223, cols 32:220, pooled to 112 px). For an
  FFHQ-aligned face that box is the ArcFace 112x112 alignment to within about two pixels (a test checks it), so
  the recognition model sees the crops it was trained on.
- `ffhq_align`: the crop geometry of the FFHQ dataset (the oriented square built from the eye centres and the
  mouth centre), computed from 5 landmarks (eyes, nose, mouth corners; the nose is not used), with FFHQ's
  supersampling and its reflect-and-blur padding where the square leaves the photo.
- `prepare_folder`: a folder of raw face photos -> a folder of aligned PNGs ready for training, with landmarks
  from a file (any detector; runs offline) or from insightface's SCRFD detector (e.g. `buffalo_l/det_10g.onnx`).

insightface (and onnxruntime) are needed only for the ArcFace metric and the detector; alignment from given
landmarks needs only numpy and Pillow. Nothing is downloaded here: the model files are found where insightface
keeps them (`~/.insightface/models/<pack>/`) or given by path.

Coordinates: landmarks are (x, y) in pixel-index coordinates of the image as displayed (EXIF orientation
applied; pixel (0, 0)'s centre is at (0, 0)), as OpenCV, insightface and most detectors report them.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from grain_pl.data.datasets import BadImageFileError, list_image_files, load_rgb_image
from grain_pl.io.files import atomic_write
from grain_pl.losses.identity import crop_faces

__all__ = [
    "ARCFACE_TEMPLATE_112",
    "DEFAULT_INSIGHTFACE_ROOT",
    "DETECTOR_FILES",
    "RECOGNITION_FILES",
    "ArcFaceIdentity",
    "FaceModelMissingError",
    "LandmarkDetector",
    "NoFaceFoundError",
    "PrepareReport",
    "detect_landmarks",
    "ffhq_align",
    "ffhq_alignment_matrix",
    "find_insightface_model",
    "load_arcface",
    "load_detector",
    "load_landmarks_file",
    "prepare_folder",
]

# Where insightface keeps its model packs: FaceAnalysis(name="buffalo_l") unpacks buffalo_l.zip into
# <root>/models/buffalo_l/ (insightface.utils.storage; the root is a parameter there, "~/.insightface" by default).
DEFAULT_INSIGHTFACE_ROOT = "~/.insightface"
MODEL_ZOO_URL = "https://github.com/deepinsight/insightface/releases/download/model-zoo/"

# (pack, file) pairs, in the order they are tried. buffalo_l is insightface's default pack.
RECOGNITION_FILES: tuple[tuple[str, str], ...] = (
    ("buffalo_l", "w600k_r50.onnx"),   # ArcFace ResNet-50, WebFace600K
    ("antelopev2", "glintr100.onnx"),  # ArcFace ResNet-100, Glint360K
    ("buffalo_m", "w600k_r50.onnx"),
    ("buffalo_s", "w600k_mbf.onnx"),   # MobileFaceNet, WebFace600K
    ("buffalo_sc", "w600k_mbf.onnx"),
)
DETECTOR_FILES: tuple[tuple[str, str], ...] = (
    ("buffalo_l", "det_10g.onnx"),     # SCRFD-10GF with 5 keypoints
    ("antelopev2", "scrfd_10g_bnkps.onnx"),
    ("buffalo_m", "det_2.5g.onnx"),
    ("buffalo_s", "det_500m.onnx"),
    ("buffalo_sc", "det_500m.onnx"),
)

# The 5-point template ArcFace models are trained on (left eye, right eye, nose, left and right mouth corner in a
# 112x112 crop; insightface.utils.face_align.arcface_dst). Used to document and test where faces land.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

# FFHQ renders the crop at 4096 px and downsizes to 1024 (4x supersampling); beyond 4096 we do not supersample.
_MAX_TRANSFORM_SIZE = 4096
PaddingMode = Literal["ffhq", "reflect", "black"]
PADDING_MODES: tuple[str, ...] = ("ffhq", "reflect", "black")


class FaceModelMissingError(FileNotFoundError):
    """An insightface model file that is not on this machine; the message says which files and how to get them."""


class NoFaceFoundError(ValueError):
    """The detector found no face in an image (the message names the image)."""


def _require_insightface(purpose: str) -> Any:
    try:
        import insightface.model_zoo as model_zoo
    except ImportError as error:
        raise ImportError(
            f"{purpose} needs insightface (and onnxruntime): pip install --constraint constraints.txt "
            f"-e '.[faces]' (or pip install insightface==2.1); import failed with: {error}"
        ) from error
    return model_zoo


def _missing_model_message(kind: str, candidates: tuple[tuple[str, str], ...], root: Path, flag: str) -> str:
    expected = "\n".join(f"  {root / 'models' / pack / name}" for pack, name in candidates)
    return (
        f"no insightface {kind} model found; looked for:\n{expected}\n"
        f"Get one on a machine with internet access: `python -c \"from insightface.app import FaceAnalysis; "
        f"FaceAnalysis(name='buffalo_l')\"` downloads and unpacks buffalo_l into {root / 'models' / 'buffalo_l'} "
        f"(or download {MODEL_ZOO_URL}buffalo_l.zip and unzip it there), then copy that folder here, or give the "
        f".onnx file with {flag}. insightface's pretrained models are licensed for non-commercial research only."
    )


def find_insightface_model(
    candidates: tuple[tuple[str, str], ...], root: str | Path = DEFAULT_INSIGHTFACE_ROOT
) -> Path | None:
    """The first existing `<root>/models/<pack>/<file>` among `candidates`, or None."""
    models = Path(root).expanduser() / "models"
    for pack, name in candidates:
        path = models / pack / name
        if path.is_file():
            return path
    return None


def _resolve_model_path(
    path: str | Path | None, candidates: tuple[tuple[str, str], ...], root: str | Path, kind: str, flag: str
) -> Path:
    """An explicit file, a model-pack folder (searched for the known file names), or the default location."""
    if path is None:
        found = find_insightface_model(candidates, root)
        if found is None:
            raise FaceModelMissingError(_missing_model_message(kind, candidates, Path(root).expanduser(), flag))
        return found
    path = Path(path).expanduser()
    if path.is_dir():  # a model pack such as ~/.insightface/models/buffalo_l
        for _, name in candidates:
            if (path / name).is_file():
                return path / name
        names = ", ".join(sorted({name for _, name in candidates}))
        raise FaceModelMissingError(f"{path} holds no insightface {kind} model (looked for {names})")
    if not path.is_file():
        raise FaceModelMissingError(f"insightface {kind} model {path} does not exist")
    return path


def _load_zoo_model(path: str | Path | None, candidates: tuple[tuple[str, str], ...], root: str | Path, *,
                    kind: str, flag: str, purpose: str, task: str, providers: list[str] | None) -> tuple[Any, Path]:
    """Find the .onnx file (`_resolve_model_path`) and open it with insightface's model zoo; the file must be
    routed as `task` ("recognition", "detection"). Returns the model and its path."""
    model_path = _resolve_model_path(path, candidates, root, kind, flag)
    model_zoo = _require_insightface(purpose)
    kwargs = {} if providers is None else {"providers": providers}
    model = model_zoo.get_model(str(model_path), **kwargs)
    # insightface routes an ONNX file by its inputs and outputs (a square input of 112 px or more is recognition).
    if model is None or getattr(model, "taskname", None) != task:
        routed = getattr(model, "taskname", "unrecognised")
        raise ValueError(f"{model_path} is not a face {task} model (insightface routes it as: {routed})")
    return model, model_path


# --------------------------------------------------------------------------------------------------------------
# ArcFace identity metric
# --------------------------------------------------------------------------------------------------------------


FaceCrop = Literal["psp", "none"]


class ArcFaceIdentity:
    """Cosine similarity of insightface ArcFace embeddings: an identity metric for `grain evaluate`.

    Args:
        model: an insightface `ArcFaceONNX` (what `insightface.model_zoo.get_model("w600k_r50.onnx")` returns), or
            any object with its `forward(batch)` (NCHW float32 RGB in 0..255 -> (B, D) numpy), `input_size`
            ((width, height)) and `input_shape` attributes.
        crop: how (B, 3, H, W) images become the model's aligned face crops:
            "psp" (default): the images are FFHQ/CelebA-HQ-aligned (any square size): the IR-SE50 loss's box
            (`grain_pl.losses.identity.crop_faces`), which puts the eyes and mouth where the ArcFace template has
            them, resized to the model's input size (112);
            "none": the images already are ArcFace-aligned crops (e.g. insightface's `norm_crop`); only resized.
        batch_size: most images per ONNX run (bounds memory on large evaluation batches).

    Use `ArcFaceIdentity.from_path(path)`; `path=None` looks in insightface's model folder.
    """

    def __init__(self, model: Any, crop: FaceCrop = "psp", batch_size: int = 32,
                 model_path: str | Path | None = None) -> None:
        if crop not in ("psp", "none"):
            raise ValueError(f"crop must be 'psp' or 'none', got {crop!r}")
        self.model = model
        self.crop = crop
        self.batch_size = max(1, int(batch_size))
        self.model_path = None if model_path is None else Path(model_path)
        width, height = model.input_size
        self.input_size = (int(height), int(width))
        # A model exported with a fixed batch of 1 must be run image by image.
        batch_dim = model.input_shape[0] if getattr(model, "input_shape", None) else None
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) and batch_dim > 0 else None

    @classmethod
    def from_path(cls, path: str | Path | None = None, *, root: str | Path = DEFAULT_INSIGHTFACE_ROOT,
                  providers: list[str] | None = None, crop: FaceCrop = "psp",
                  batch_size: int = 32) -> ArcFaceIdentity:
        """Load a recognition model through insightface's model zoo.

        Args:
            path: the .onnx file (e.g. `w600k_r50.onnx`), a model-pack folder holding one, or None for the first of
                `RECOGNITION_FILES` under `<root>/models/` (buffalo_l's `w600k_r50.onnx` first).
            root: insightface's root folder (where FaceAnalysis downloads to).
            providers: onnxruntime execution providers; None lets insightface choose (CUDA when available).

        Raises:
            FaceModelMissingError: no such file / nothing in the default location (the message lists the expected
                files and how to get them).
            ValueError: the file is not a recognition model (e.g. a detector).
        """
        model, model_path = _load_zoo_model(path, RECOGNITION_FILES, root, kind="recognition (ArcFace)",
                                            flag="--arcface", purpose="The ArcFace identity metric",
                                            task="recognition", providers=providers)
        return cls(model, crop=crop, batch_size=batch_size, model_path=model_path)

    def _faces(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, 3, h, w) face crops at the model's input size, float32 on the CPU."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
        images = images.detach().float().cpu()
        faces = crop_faces(images) if self.crop == "psp" else images
        if tuple(faces.shape[-2:]) != self.input_size:
            faces = F.interpolate(faces, size=self.input_size, mode="bilinear", align_corners=False,
                                  antialias=True)
        return faces

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (B, D) of (B, 3, H, W) images in [-1, 1], on the images' device."""
        faces = self._faces(images)
        # ArcFaceONNX.forward takes RGB pixels in 0..255 and applies the model's own normalisation (127.5/127.5
        # for insightface's current models, none for old MXNet exports), so [-1, 1] maps back to 0..255 here.
        pixels = ((faces + 1.0) * 127.5).clamp(0.0, 255.0).numpy().astype(np.float32)
        chunk = self._fixed_batch or self.batch_size
        outputs = [np.asarray(self.model.forward(pixels[start:start + chunk]), dtype=np.float32)
                   for start in range(0, len(pixels), chunk)]
        embeddings = torch.from_numpy(np.concatenate(outputs, axis=0).reshape(len(pixels), -1))
        return F.normalize(embeddings, p=2.0, dim=1).to(images.device)

    @torch.no_grad()
    def similarity(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample cosine similarity (B,) of the embeddings of two image batches (no gradient)."""
        if output.shape != target.shape:
            raise ValueError(f"output and target shapes differ: {tuple(output.shape)} vs {tuple(target.shape)}")
        return (self.embed(output) * self.embed(target)).sum(dim=1)

    def __repr__(self) -> str:
        return f"ArcFaceIdentity(model_path={self.model_path}, crop={self.crop!r}, input_size={self.input_size})"


def load_arcface(path: str | Path | None) -> ArcFaceIdentity:
    """`grain evaluate --arcface PATH`'s loader: a recognition .onnx file or a model-pack folder (None: the default
    location). A missing insightface becomes a ValueError, so the command reports it like other user errors."""
    try:
        return ArcFaceIdentity.from_path(path)
    except ImportError as error:
        raise ValueError(str(error)) from error


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
    detector, model_path = _load_zoo_model(path, DETECTOR_FILES, root, kind="face detection (SCRFD)",
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
# Folders
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


@dataclass
class PrepareReport:
    """What `prepare_folder` did, by source path relative to the source folder."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)           # output existed (skip_existing=True)
    failed: dict[str, str] = field(default_factory=dict)        # relative path -> reason
    unused_landmarks: list[str] = field(default_factory=list)   # landmarks-file keys without an image

    def summary(self, max_failures: int = 20) -> str:
        lines = [f"aligned {len(self.written)} image(s)"
                 + (f", skipped {len(self.skipped)} existing" if self.skipped else "")
                 + (f", {len(self.failed)} failed" if self.failed else "")]
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
        FileNotFoundError / ValueError: no source folder, no image in it, a bad landmarks file, no detector.
    """
    source, destination = Path(source), Path(destination)
    if landmarks_file is not None and (detector is not None or detector_path is not None):
        raise ValueError("give either a landmarks file or a detector, not both")
    if detector is not None and detector_path is not None:
        raise ValueError("give either a detector object or a detector path, not both")
    if overwrite and skip_existing:
        raise ValueError("overwrite and skip_existing exclude each other")
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")

    files = list_image_files(source)
    destination_resolved = destination.resolve()
    # A destination inside the source must not feed earlier outputs back in.
    files = [path for path in files if not path.resolve().is_relative_to(destination_resolved)]
    relatives = [path.relative_to(source).as_posix() for path in files]
    if not files:
        raise ValueError(f"no image files under {source} outside the destination {destination}")

    report = PrepareReport()
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
        atomic_write(target, lambda file, image=aligned: image.save(file, format="PNG"), overwrite=True)
        report.written.append(relative)
    return report
