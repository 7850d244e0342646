"""The identity (ArcFace) term of the GRAIN objective (docs/method.md §2.2).

Both images are brought to 256x256 by plain bilinear resizing (official: no antialias), cropped to the face box
the pSp ID loss assumes for FFHQ/CelebA-HQ-aligned faces (rows 35:223, cols 32:220, i.e. 188x188),
average-pooled to 112x112 and embedded by a frozen IR-SE50. The loss is the batch mean of
1 - cos(embedding(output), embedding(target)), with the target embedding carrying no gradient.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# The crop is defined on a 256x256 image; other sizes are resized to this first, so it works for 32..1024.
ALIGN_SIZE = 256
CROP_ROWS = (35, 223)
CROP_COLS = (32, 220)
FACE_SIZE = 112

PSP_IRSE50_DRIVE_ID = "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn"


def missing_identity_weights_message() -> str:
    return (
        "IdentityLoss needs the IR-SE50 ArcFace weights `model_ir_se50.pth` that pSp (eladrich/pixel2style2pixel) "
        "publishes: download it from the link in the pSp README (Google Drive file id "
        f"{PSP_IRSE50_DRIVE_ID}, https://drive.google.com/file/d/{PSP_IRSE50_DRIVE_ID}), then set "
        "`identity_weights: /path/to/model_ir_se50.pth` in the stage config (or give the identity term weight 0)."
    )


def crop_faces(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) images -> (B, 3, 112, 112) face crops, exactly as the official ID loss prepares them."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (ALIGN_SIZE, ALIGN_SIZE):
        images = F.interpolate(images, size=(ALIGN_SIZE, ALIGN_SIZE), mode="bilinear", align_corners=False,
                               antialias=False)
    faces = images[:, :, CROP_ROWS[0]:CROP_ROWS[1], CROP_COLS[0]:CROP_COLS[1]]
    return F.adaptive_avg_pool2d(faces, FACE_SIZE)


class IdentityLoss(nn.Module):
    """1 - cosine similarity of IR-SE50 face embeddings; the network is frozen and locked in eval mode.

    Args:
        weights_path: pSp's `model_ir_se50.pth`. None raises a ValueError that says where to get it.

    Use `IdentityLoss.from_network(net)` to wrap an already built embedding network (e.g. a random IRSE50 in
    tests); it must map (B, 3, 112, 112) faces in [-1, 1] to (B, D) embeddings.
    """

    def __init__(self, weights_path: str | Path | None) -> None:
        super().__init__()
        if weights_path is None:
            raise ValueError(missing_identity_weights_message())
        from grain_pl.weights.irse50 import load_irse50  # deferred: keeps importing the losses package light

        self._attach(load_irse50(weights_path))
        self.weights_path: Path | None = Path(weights_path)

    @classmethod
    def from_network(cls, network: nn.Module) -> IdentityLoss:
        """Wrap an existing embedding network instead of loading the checkpoint (it gets frozen in place)."""
        loss = cls.__new__(cls)
        nn.Module.__init__(loss)
        loss._attach(network)
        loss.weights_path = None
        return loss

    def _attach(self, network: nn.Module) -> None:
        self.network = network
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> IdentityLoss:
        # Parents (and Lightning) call .train() on every child; IR-SE50's BatchNorm and Dropout must stay in eval.
        return super().train(False)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings (B, D) of full images (B, 3, H, W) in [-1, 1]."""
        return F.normalize(self.network(crop_faces(images)), p=2.0, dim=1)

    def similarity(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-sample cosine similarity (B,); gradients reach `output` only."""
        if output.shape != target.shape:
            raise ValueError(f"output and target shapes differ: {tuple(output.shape)} vs {tuple(target.shape)}")
        with torch.no_grad():  # the official detaches the target embedding; no_grad also saves its activations
            target_embedding = self.embed(target)
        return (self.embed(output) * target_embedding).sum(dim=1)

    def loss_and_similarity(self, output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss and the detached mean similarity (for logging) from a single pass."""
        similarity = self.similarity(output, target)
        return (1.0 - similarity).mean(), similarity.detach().mean()

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of 1 - cos(embedding(output), embedding(target)): a scalar in [0, 2]."""
        return (1.0 - self.similarity(output, target)).mean()

    def extra_repr(self) -> str:
        return (f"align_size={ALIGN_SIZE}, crop_rows={CROP_ROWS}, crop_cols={CROP_COLS}, face_size={FACE_SIZE}, "
                f"weights_path={self.weights_path}")
