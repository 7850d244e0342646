"""Image-quality metrics for GRAIN's reconstructions: PSNR, SSIM, LPIPS and their luma (Y) variants.

Every metric is a torchmetrics state, so accumulating over a validation/test epoch and syncing across DDP ranks
is torchmetrics' job. Inputs are images in [-1, 1] (B, 3, H, W), like every image of `GrainOutput`; they are
clamped to [-1, 1] first, because that is what a saved image can hold. The luma variants need `y_channel=True`.
(tests/metrics/test_docstring_examples.py runs this example.)

    >>> import torch
    >>> from grain_pl.metrics import ImageQualityMetrics
    >>> hr = torch.zeros(2, 3, 64, 64)                 # e.g. batch["hr"]: (B, 3, H, W) in [-1, 1]
    >>> hr_out = hr + 0.2                              # e.g. output.hr_out: 0.1 off in [0, 1], so PSNR = 20 dB
    >>> metrics = ImageQualityMetrics(prefix="val/")   # a MetricCollection: log it with `self.log_dict`
    >>> metrics.update(hr_out, hr)
    >>> {name: round(value.item(), 3) for name, value in sorted(metrics.compute().items())}
    {'val/lpips': 0.054, 'val/psnr': 20.0, 'val/ssim': 0.984}
    >>> sorted(ImageQualityMetrics(lpips=False, y_channel=True, prefix="val/").keys())
    ['val/psnr', 'val/psnr_y', 'val/ssim', 'val/ssim_y']

`capped_psnr` is the per-image PSNR of `grain evaluate` (capped at PSNR_CAP_DB, so identical images score a
finite number).
"""

from __future__ import annotations

from typing import Any

import torch
from kornia.color import rgb_to_ycbcr
from torchmetrics import MeanMetric, Metric, MetricCollection
from torchmetrics.functional.image import peak_signal_noise_ratio
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.losses.perceptual import PerceptualLoss
from grain_pl.weights.io import PathLike

METRIC_NAMES = ("psnr", "ssim", "lpips", "psnr_y", "ssim_y")
# Identical images have an infinite PSNR; capped, means stay finite and JSON stays standard. 100 dB is far above any
# lossy result (a one-level error in 60 samples of a 1024 x 1024 image is ~95 dB).
PSNR_CAP_DB = 100.0

# PSNR per image over (C, H, W), then the mean over images: the number SR papers report. torchmetrics' default
# (dim=None) would instead give the PSNR of the dataset-wide MSE, which weights good images less.
_PER_IMAGE_DIMS = (1, 2, 3)


def quantize_like_png(image: torch.Tensor) -> torch.Tensor:
    """Round an image in [-1, 1] to the 256 levels an 8-bit PNG holds (and back to [-1, 1], float32).

    Evaluating on `quantize_like_png(hr_out)` scores what a user would get from the saved file.
    """
    return from_uint8(to_uint8(image), dtype=torch.float64 if image.dtype == torch.float64 else torch.float32)


def to_unit_range(image: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], clamped, in float32 (metrics in bf16 would lose the last bits of PSNR)."""
    return ((image.float() + 1) / 2).clamp(0, 1)


def capped_psnr(output_unit: torch.Tensor, target_unit: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (B,) of (B, C, H, W) images in [0, 1], data range 1, capped at PSNR_CAP_DB."""
    psnr = peak_signal_noise_ratio(output_unit, target_unit, data_range=1.0, dim=(1, 2, 3), reduction="none")
    return psnr.clamp(max=PSNR_CAP_DB)


def luma(image_unit: torch.Tensor) -> torch.Tensor:
    """BT.601 full-range luma Y = 0.299 R + 0.587 G + 0.114 B of an RGB image in [0, 1]: (B, 1, H, W)."""
    return rgb_to_ycbcr(image_unit)[:, :1]


def _check_pair(output: torch.Tensor, target: torch.Tensor) -> None:
    if output.shape != target.shape or output.ndim != 4 or output.shape[1] != 3:
        raise ValueError(f"expected two (B, 3, H, W) images of the same shape, "
                         f"got {tuple(output.shape)} and {tuple(target.shape)}")


class ImageQualityMetrics(MetricCollection):
    """PSNR, SSIM and LPIPS between an output and a target in [-1, 1], accumulated over batches.

    Names: "psnr", "ssim", "lpips" (if `lpips`), "psnr_y", "ssim_y" (if `y_channel`), with `prefix`/`postfix`
    added as in any MetricCollection.

    - PSNR and SSIM use data range 1 on the images mapped to [0, 1] and clamped. PSNR is averaged per image.
    - LPIPS is grain_pl's `PerceptualLoss` (AlexNet, v0.1) on the clamped [-1, 1] images; its per-sample
      distances feed a `MeanMetric`, so the DDP sync is a plain sum/count. Building it raises if the AlexNet
      weights are missing.
    - The Y variants use BT.601 full-range luma (kornia's `rgb_to_ycbcr`), not MATLAB's 16-235 studio range.

    The LPIPS network is deliberately *not* a registered submodule: it would otherwise land in every checkpoint
    of the LightningModule holding these metrics and in its parameter count. It follows the inputs' device on
    each update instead.

    Args:
        lpips: compute LPIPS.
        y_channel: also compute "psnr_y" and "ssim_y".
        lpips_resize_to: LPIPS at this square size (see `PerceptualLoss`); None: at the input size.
        lpips_weights_path: the AlexNet weights for LPIPS; default: found as `PerceptualLoss` finds them.
        prefix, postfix: added to every metric name, e.g. prefix="val/".
    """

    def __init__(
        self,
        lpips: bool = True,
        y_channel: bool = False,
        lpips_resize_to: int | None = None,
        lpips_weights_path: PathLike | None = None,
        prefix: str | None = None,
        postfix: str | None = None,
    ) -> None:
        metrics: dict[str, Metric] = {
            "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=_PER_IMAGE_DIMS),
            "ssim": StructuralSimilarityIndexMeasure(data_range=1.0),
        }
        if y_channel:
            metrics["psnr_y"] = PeakSignalNoiseRatio(data_range=1.0, dim=_PER_IMAGE_DIMS)
            metrics["ssim_y"] = StructuralSimilarityIndexMeasure(data_range=1.0)
        if lpips:
            metrics["lpips"] = MeanMetric()
        # No compute groups: each metric gets its own inputs, so torchmetrics must not try to merge states.
        super().__init__(metrics, prefix=prefix, postfix=postfix, compute_groups=False)
        self.y_channel = y_channel
        perceptual = (PerceptualLoss(resize_to=lpips_resize_to, reduction="none", weights_path=lpips_weights_path)
                      if lpips else None)
        # object.__setattr__ keeps it out of nn.Module's registry (no state_dict entries, no parameters).
        object.__setattr__(self, "_perceptual", perceptual)

    @property
    def perceptual(self) -> PerceptualLoss | None:
        """The LPIPS network (None when lpips=False)."""
        return self._perceptual

    @torch.no_grad()
    def _inputs(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, tuple[torch.Tensor, ...]]:
        """The positional arguments of each metric's update for one batch."""
        _check_pair(output, target)
        output_unit, target_unit = to_unit_range(output.detach()), to_unit_range(target.detach())
        inputs: dict[str, tuple[torch.Tensor, ...]] = {
            "psnr": (output_unit, target_unit),
            "ssim": (output_unit, target_unit),
        }
        if self.y_channel:
            output_y, target_y = luma(output_unit), luma(target_unit)
            inputs["psnr_y"] = (output_y, target_y)
            inputs["ssim_y"] = (output_y, target_y)
        if self._perceptual is not None:
            self._perceptual.to(output.device)  # no-op once it is there
            # LPIPS in float32 even under a bf16/fp16 autocast of the surrounding step.
            with torch.autocast(device_type=output.device.type, enabled=False):
                distances = self._perceptual(output_unit * 2 - 1, target_unit * 2 - 1)
            inputs["lpips"] = (distances,)
        return inputs

    def update(self, output: torch.Tensor, target: torch.Tensor) -> None:  # type: ignore[override]
        """Accumulate one batch: `output` and `target` are (B, 3, H, W) in [-1, 1]."""
        inputs = self._inputs(output, target)
        for name, metric in self.items(keep_base=True, copy_state=False):
            metric.update(*inputs[name])

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, Any]:  # type: ignore[override]
        """Accumulate one batch and return this batch's values (named with prefix/postfix)."""
        inputs = self._inputs(output, target)
        return {f"{self.prefix or ''}{name}{self.postfix or ''}": metric(*inputs[name])
                for name, metric in self.items(keep_base=True, copy_state=False)}
