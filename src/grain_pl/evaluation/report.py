"""The evaluation's outputs: the per-method summary, per_image.csv, summary.json, rd_plot.png and the printed table."""

from __future__ import annotations

import csv
import io
import json
import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from grain_pl.evaluation.protocol import (
    CSV_COLUMNS,
    LR_CODEC_SEPARATOR,
    LR_METRIC_COLUMNS,
    METRIC_COLUMNS,
    UPSCALER_METHOD,
    avif_available,
    parse_method,
)
from grain_pl.io.files import atomic_write, write_bytes


def summarize(rows: Sequence[Mapping[str, Any]], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per method: the number of images, the mean of bytes, bpp and every metric (None where not computed),
    and for matched methods the mean quality and how many images even quality 1 did not fit ("over_target")."""
    summary: dict[str, dict[str, Any]] = {}
    for method in methods:
        method_rows = [row for row in rows if row["method"] == method]
        entry: dict[str, Any] = {"images": len(method_rows)}
        for column in ("bytes", "bpp", *METRIC_COLUMNS, *LR_METRIC_COLUMNS, "quality"):
            values = [row[column] for row in method_rows if row.get(column) is not None]
            entry[column] = float(np.mean(values)) if values else None
        if any(row.get("target_bytes") is not None for row in method_rows):
            entry["target_bytes"] = float(np.mean([row["target_bytes"] for row in method_rows]))
            entry["over_target"] = sum(row["bytes"] > row["target_bytes"] for row in method_rows)
        summary[method] = entry
    return summary


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    """The rows as CSV, written atomically (a full disk leaves no half file, and an earlier one intact)."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({column: _csv_value(row.get(column)) for column in CSV_COLUMNS})
    write_bytes(text.getvalue().encode(), path, overwrite=True)


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""  # not computed (e.g. identity without weights)
    if isinstance(value, float):
        return repr(value)  # shortest exact round trip
    return value


def _family(method: str) -> str:
    """The curve a row belongs to: "jpeg" for jpeg_q40 and jpeg_matched, "grain+jpeg" for grain+jpeg_q90 (a model
    row re-encoded, --lr-codec), the row itself otherwise."""
    model_row, separator, recoding = method.partition(LR_CODEC_SEPARATOR)
    if separator:
        return f"{model_row}{separator}{recoding.split('_q')[0]}"
    try:
        return method.split("_")[0] if parse_method(method).kind == "codec" else method
    except ValueError:  # grain_upscale and any other row of a caller's own
        return method


_STYLES = {"grain": ("tab:red", "*"), "bilinear": ("tab:green", "s"), "bicubic": ("tab:olive", "D"),
           "jpeg": ("tab:blue", "o"), "webp": ("tab:purple", "^"), "avif": ("tab:cyan", "v"),
           UPSCALER_METHOD: ("tab:brown", "P")}


def _style(family: str) -> tuple[str, str, str]:
    """(colour, marker, line style): a re-encoded model row takes its model's colour, its codec's marker and a
    dashed line."""
    model_row, separator, codec = family.partition(LR_CODEC_SEPARATOR)
    if separator:
        return _STYLES.get(model_row, ("tab:gray", "x"))[0], _STYLES.get(codec, ("tab:gray", "x"))[1], "--"
    return (*_STYLES.get(family, ("tab:gray", "x")), "-")


def plot_rate_distortion(summary: Mapping[str, Mapping[str, Any]], path: str | Path, title: str | None = None) -> None:
    """Two panels, PSNR and LPIPS against mean bytes (log x): one point per method; the fixed-quality points of
    a codec are joined into its curve, matched points are hollow. Uses the Agg canvas (no display, no pyplot)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.5), layout="constrained")
    FigureCanvasAgg(figure)
    for axis, metric, label in zip(figure.subplots(1, 2), ("psnr", "lpips"),
                                   ("PSNR (dB, higher is better)", "LPIPS (lower is better)")):
        for family in dict.fromkeys(_family(method) for method in summary):
            color, marker, line = _style(family)
            members = [method for method in summary if _family(method) == family
                       and summary[method].get(metric) is not None and summary[method].get("bytes")]
            fixed = sorted((method for method in members if "_q" in method), key=lambda m: summary[m]["bytes"])
            if fixed:
                axis.plot([summary[m]["bytes"] for m in fixed], [summary[m][metric] for m in fixed], color=color,
                          marker=marker, linestyle=line,
                          label=f"{family} (q {', '.join(m.split('_q')[-1] for m in fixed)})")
            for method in members:
                if method in fixed:
                    continue
                matched = method.endswith("_matched")
                axis.scatter(summary[method]["bytes"], summary[method][metric], color=color, marker=marker,
                             s=140 if family == "grain" else 110 if matched else 60, label=method, zorder=3,
                             facecolors="none" if matched else color)
        axis.set_xscale("log")
        axis.set_xlabel("bytes per image (mean)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    if title:
        figure.suptitle(title)
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120), overwrite=True)


def library_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    from PIL import features

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("grain_pl", "torch", "torchvision", "torchmetrics", "kornia", "lpips", "pillow", "numpy",
                    "matplotlib"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    versions["libjpeg"] = features.version("jpg")
    versions["libwebp"] = features.version("webp")
    versions["libavif"] = features.version("avif") if avif_available() else None
    try:  # the AV1 encoder libavif picks decides AVIF's sizes (Pillow tells only through its private module)
        from PIL import _avif

        versions["avif_encoders"] = ", ".join(codec for codec in ("aom", "rav1e", "svt")
                                              if _avif.encoder_codec_available(codec))
    except (ImportError, AttributeError):
        versions["avif_encoders"] = None
    return versions


def write_results(output_dir: Path, rows: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], title: str) -> None:
    """per_image.csv (rows), summary.json (summary) and rd_plot.png (summary["methods"]) into output_dir, each
    atomically: after a failure (a full disk) each file is complete or absent."""
    output_dir.mkdir(parents=True, exist_ok=True)
    write_csv(rows, output_dir / "per_image.csv")
    # allow_nan=False: a NaN/inf would make the file invalid JSON; the PSNR cap keeps every value finite.
    write_bytes((json.dumps(summary, indent=2, allow_nan=False) + "\n").encode(), output_dir / "summary.json",
                overwrite=True)
    plot_rate_distortion(summary["methods"], output_dir / "rd_plot.png", title=title)


# (name, width, digits) of the printed table
_TABLE_COLUMNS = (("bytes", 10, 1), ("bpp", 9, 5), ("psnr", 8, 2), ("ssim", 8, 4), ("psnr_y", 8, 2), ("lpips", 8, 4),
                  ("identity", 9, 4), ("lr_psnr", 9, 2), ("lr_ssim", 9, 4))


def format_summary(summary: Mapping[str, Any]) -> str:
    """A plain-text table of summary["methods"] (for the CLI); "-" where a method has no value."""
    name_width = max([14, *(len(method) + 1 for method in summary["methods"])])  # grain_upscale+webp_q100
    lines = [f"{'method':<{name_width}}" + "".join(f"{name:>{width}}" for name, width, _ in _TABLE_COLUMNS)]
    for method, entry in summary["methods"].items():
        cells = "".join(_cell(entry.get(name), width, digits) for name, width, digits in _TABLE_COLUMNS)
        lines.append(f"{method:<{name_width}}{cells}")
    return "\n".join(lines)


def _cell(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None or not math.isfinite(value) else f"{value:>{width}.{digits}f}"
