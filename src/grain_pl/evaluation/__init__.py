"""`grain evaluate`'s protocol: GRAIN against resize and codec baselines on a folder of test images.

The protocol in prose: docs/evaluation.md; its machine-readable copy: `PROTOCOL` (written into every summary.json).

    protocol.py   the methods and their names, encoder settings, columns, PROTOCOL
    baselines.py  bilinear/bicubic through an 8-bit LR PNG, JPEG/WebP at fixed and GRAIN-matched sizes
    scoring.py    the metrics of an output (psnr ... arcface) and of a stored LR (lr_psnr, lr_ssim)
    report.py     the summary, per_image.csv, summary.json, rd_plot.png and the printed table
    run.py        evaluate_folder: GRAIN through the real PNG, every baseline, every image of a folder
"""

from grain_pl.evaluation.baselines import (
    baseline_reconstructions,
    codec_baseline,
    decode_image_bytes,
    encode_with_pillow,
    jitter_slack,
    largest_quality_within,
    matched_codec_baseline,
    resize_baseline,
)
from grain_pl.evaluation.protocol import (
    CSV_COLUMNS,
    DEFAULT_METHODS,
    EVALUATION_RESIZE_POLICIES,
    FIXED_QUALITIES,
    LR_METRIC_COLUMNS,
    METRIC_COLUMNS,
    PROTOCOL,
    PSNR_CAP_DB,
    RESULT_FILES,
    Reconstruction,
    SimilarityModel,
    parse_method,
)
from grain_pl.evaluation.report import format_summary, plot_rate_distortion, summarize
from grain_pl.evaluation.run import check_output_dir, evaluate_folder, grain_reconstruction
from grain_pl.evaluation.scoring import ReconstructionScorer, lr_scores

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_METHODS",
    "EVALUATION_RESIZE_POLICIES",
    "FIXED_QUALITIES",
    "LR_METRIC_COLUMNS",
    "METRIC_COLUMNS",
    "PROTOCOL",
    "PSNR_CAP_DB",
    "RESULT_FILES",
    "Reconstruction",
    "ReconstructionScorer",
    "SimilarityModel",
    "baseline_reconstructions",
    "check_output_dir",
    "codec_baseline",
    "decode_image_bytes",
    "encode_with_pillow",
    "evaluate_folder",
    "format_summary",
    "grain_reconstruction",
    "jitter_slack",
    "largest_quality_within",
    "lr_scores",
    "matched_codec_baseline",
    "parse_method",
    "plot_rate_distortion",
    "resize_baseline",
    "summarize",
]
