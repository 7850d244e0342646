"""Image-quality metrics for validation and evaluation."""

from grain_pl.metrics.image_quality import METRIC_NAMES, ImageQualityMetrics, quantize_like_png

__all__ = ["METRIC_NAMES", "ImageQualityMetrics", "quantize_like_png"]
