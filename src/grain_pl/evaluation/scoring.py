"""The evaluation's metrics: per image and method, the 8-bit output against the 8-bit target (psnr ... arcface),
and the stored LR against the target's reference thumbnail (lr_psnr, lr_ssim)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics.functional.image import structural_similarity_index_measure

from grain_pl.evaluation.protocol import LR_METRIC_COLUMNS, SimilarityModel
from grain_pl.io.images import check_uint8_image, from_uint8
from grain_pl.metrics.image_quality import capped_psnr, luma, to_unit_range
from grain_pl.metrics.lr_fidelity import lr_fidelity

METRIC_CHUNK = 8  # outputs scored per batch: bounds LPIPS' memory at 1024 px


class ReconstructionScorer:
    """Per-image metrics of 8-bit outputs against one 8-bit target (the definitions of docs/evaluation.md).

    perceptual: a `PerceptualLoss` (or any module mapping two (B, 3, H, W) [-1, 1] batches to (B,) distances);
    None builds the offline LPIPS AlexNet. identity / arcface: optional `SimilarityModel`s.
    """

    def __init__(self, perceptual: torch.nn.Module | None = None, identity: SimilarityModel | None = None,
                 arcface: SimilarityModel | None = None, device: torch.device | str = "cpu") -> None:
        if perceptual is None:
            from grain_pl.losses.perceptual import PerceptualLoss

            perceptual = PerceptualLoss(resize_to=None, reduction="none")
        self.device = torch.device(device)
        self.perceptual = perceptual.to(self.device)
        self.identity = identity.to(self.device) if isinstance(identity, torch.nn.Module) else identity
        self.arcface = arcface.to(self.device) if isinstance(arcface, torch.nn.Module) else arcface

    @torch.inference_mode()
    def score(self, outputs_uint8: torch.Tensor, target_uint8: torch.Tensor) -> list[dict[str, float | None]]:
        """outputs (N, 3, H, W) uint8 vs target (3, H, W) uint8 -> N dicts with every METRIC_COLUMNS entry."""
        check_uint8_image(target_uint8, "target")
        rows: list[dict[str, float | None]] = []
        for chunk in outputs_uint8.split(METRIC_CHUNK):
            rows += self._score_chunk(chunk.to(self.device), target_uint8.to(self.device))
        return rows

    def _score_chunk(self, outputs_uint8: torch.Tensor, target_uint8: torch.Tensor) -> list[dict[str, float | None]]:
        outputs = from_uint8(outputs_uint8)
        targets = from_uint8(target_uint8)[None].expand_as(outputs)
        # The same mapping as ImageQualityMetrics: [-1, 1] -> [0, 1], clamped, float32.
        outputs_unit, targets_unit = to_unit_range(outputs), to_unit_range(targets)
        outputs_y, targets_y = luma(outputs_unit), luma(targets_unit)
        values: dict[str, torch.Tensor | None] = {
            "psnr": capped_psnr(outputs_unit, targets_unit),
            "ssim": structural_similarity_index_measure(outputs_unit, targets_unit, data_range=1.0, reduction="none"),
            "psnr_y": capped_psnr(outputs_y, targets_y),
            "ssim_y": structural_similarity_index_measure(outputs_y, targets_y, data_range=1.0, reduction="none"),
            "lpips": self.perceptual(outputs_unit * 2 - 1, targets_unit * 2 - 1).flatten(),
            "identity": self.identity.similarity(outputs, targets) if self.identity is not None else None,
            "arcface": self.arcface.similarity(outputs, targets) if self.arcface is not None else None,
        }
        return [{name: (None if value is None else float(value[index])) for name, value in values.items()}
                for index in range(outputs.shape[0])]


def lr_scores(lrs_uint8: Sequence[torch.Tensor | None], target_uint8: torch.Tensor) -> list[dict[str, float | None]]:
    """Each stored LR (uint8 (3, h, w), or None for a method without one) against the reference thumbnail of the
    target (3, H, W) -> one dict with every LR_METRIC_COLUMNS entry per LR (None where there is no LR)."""
    check_uint8_image(target_uint8, "target")
    rows: list[dict[str, float | None]] = [dict.fromkeys(LR_METRIC_COLUMNS) for _ in lrs_uint8]
    present = [index for index, lr in enumerate(lrs_uint8) if lr is not None]
    if present:
        lrs = torch.stack([lrs_uint8[index].cpu() for index in present])
        values = lr_fidelity(lrs, target_uint8.cpu()[None].expand(len(present), -1, -1, -1))
        for position, index in enumerate(present):
            rows[index] = {name: (None if values[name] is None else float(values[name][position]))
                           for name in LR_METRIC_COLUMNS}
    return rows
