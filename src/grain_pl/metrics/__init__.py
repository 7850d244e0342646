"""Image-quality metrics for validation and evaluation: the HR's (PSNR, SSIM, LPIPS) and the LR's fidelity."""

from grain_pl.metrics.image_quality import (
    METRIC_NAMES,
    PSNR_CAP_DB,
    ImageQualityMetrics,
    capped_psnr,
    quantize_like_png,
)
from grain_pl.metrics.lr_fidelity import lr_fidelity, reference_thumbnail

__all__ = ["METRIC_NAMES", "PSNR_CAP_DB", "ImageQualityMetrics", "capped_psnr", "lr_fidelity", "quantize_like_png",
           "reference_thumbnail"]
