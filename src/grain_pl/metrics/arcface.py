"""ArcFace identity: insightface's face-recognition model as an identity *metric* for `grain evaluate`.

`ArcFaceIdentity` scores how well a reconstruction keeps a person's identity: the cosine similarity of the ArcFace
embeddings of output and target. The model is an ONNX file of insightface's model zoo (e.g.
`buffalo_l/w600k_r50.onnx`, found and opened by `grain_pl.weights.insightface`); it stands beside the IR-SE50 of
the training loss (`grain_pl.losses.identity`).

Inputs are FFHQ/CelebA-HQ-aligned images in [-1, 1]; each is cut to the face box the IR-SE50 loss uses
(`crop_faces`: 256 px, rows 35:223, cols 32:220, pooled to 112 px). For an FFHQ-aligned face that box is the ArcFace
112x112 alignment (`ARCFACE_TEMPLATE_112`) to within about two pixels (a test checks it), so the recognition model
sees the crops it was trained on. Needs insightface and onnxruntime (the `faces` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from grain_pl.losses.identity import crop_faces
from grain_pl.weights.insightface import DEFAULT_INSIGHTFACE_ROOT, RECOGNITION_FILES, load_zoo_model

__all__ = ["ARCFACE_TEMPLATE_112", "ArcFaceIdentity", "FaceCrop", "load_arcface"]

# The 5-point template ArcFace models are trained on (left eye, right eye, nose, left and right mouth corner in a
# 112x112 crop; insightface.utils.face_align.arcface_dst). Used to document and test where faces land.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

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
        model, model_path = load_zoo_model(path, RECOGNITION_FILES, root, kind="recognition (ArcFace)",
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

