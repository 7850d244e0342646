"""`grain evaluate`'s protocol: GRAIN against resize and codec baselines on a folder of test images.

The protocol in prose: docs/evaluation.md; its machine-readable copy: `PROTOCOL` (written into every summary.json).

    protocol.py   the methods and their names, encoder settings, columns, PROTOCOL
    baselines.py  bilinear/bicubic through an 8-bit LR PNG, JPEG/WebP/AVIF at fixed and GRAIN-matched sizes
    scoring.py    the metrics of an output (psnr ... arcface) and of a stored LR (lr_psnr, lr_ssim)
    report.py     the summary, per_image.csv, summary.json, rd_plot.png and the printed table
    run.py        evaluate_folder: GRAIN through the real PNG, every baseline, an upscaler's row, the LR re-encoded
                  (--lr-codec), every image of a folder
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
    CODECS,
    CSV_COLUMNS,
    DEFAULT_METHODS,
    EVALUATION_RESIZE_POLICIES,
    FIXED_QUALITIES,
    LR_CODEC_SEPARATOR,
    LR_METRIC_COLUMNS,
    METRIC_COLUMNS,
    PROTOCOL,
    PSNR_CAP_DB,
    RESULT_FILES,
    UPSCALER_METHOD,
    LrCodecSetting,
    Reconstruction,
    SimilarityModel,
    avif_available,
    parse_lr_codecs,
    parse_method,
)
from grain_pl.evaluation.report import format_summary, plot_rate_distortion, summarize
from grain_pl.evaluation.run import (
    check_output_dir,
    evaluate_folder,
    grain_reconstruction,
    lr_codec_reconstruction,
    upscaler_reconstruction,
)
from grain_pl.evaluation.scoring import ReconstructionScorer, lr_scores

__all__ = [
    "CODECS",
    "CSV_COLUMNS",
    "DEFAULT_METHODS",
    "EVALUATION_RESIZE_POLICIES",
    "FIXED_QUALITIES",
    "LR_CODEC_SEPARATOR",
    "LR_METRIC_COLUMNS",
    "METRIC_COLUMNS",
    "PROTOCOL",
    "PSNR_CAP_DB",
    "RESULT_FILES",
    "UPSCALER_METHOD",
    "LrCodecSetting",
    "Reconstruction",
    "ReconstructionScorer",
    "SimilarityModel",
    "avif_available",
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
    "lr_codec_reconstruction",
    "lr_scores",
    "matched_codec_baseline",
    "parse_lr_codecs",
    "parse_method",
    "plot_rate_distortion",
    "resize_baseline",
    "summarize",
    "upscaler_reconstruction",
]
