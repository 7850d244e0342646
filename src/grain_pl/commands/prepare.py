"""`grain prepare`: align raw face photos into a training folder (see grain_pl.data.prepare.prepare_folder).

    grain prepare photos/ -o faces-1024/ --size 1024                      # insightface's detector (buffalo_l)
    grain prepare photos/ -o faces-1024/ --detector ~/models/det_10g.onnx
    grain prepare photos/ -o faces-1024/ --landmarks landmarks.json       # your own 5-point landmarks, offline
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _run_prepare(args: argparse.Namespace) -> str:
    from grain_pl.data.prepare import prepare_folder

    def progress(index: int, total: int, name: str) -> None:
        if args.verbose or index % 100 == 0:
            print(f"[{index + 1}/{total}] {name}", file=sys.stderr, flush=True)

    try:
        report = prepare_folder(
            args.source, args.output, output_size=args.size, detector_path=args.detector,
            landmarks_file=args.landmarks, overwrite=args.overwrite, skip_existing=args.skip_existing,
            detector_input_size=(args.det_size, args.det_size), padding=args.padding, progress=progress,
        )
    except ImportError as error:
        # `grain`'s main reports ValueErrors (and OSErrors: a missing folder, a full disk) as one line, exit status 2.
        raise ValueError(str(error)) from error
    if not report.written and report.failed:
        raise ValueError(report.summary())
    return report.summary() + f"\naligned faces are in {args.output}"


def add_prepare_command(subparsers: Any) -> argparse.ArgumentParser:
    """Add `prepare` to the `grain` command's subparsers; the command's handler is `args.run`."""
    prepare = subparsers.add_parser(
        "prepare", help="align and crop raw face photos FFHQ-style into a training folder",
        description="Align every photo under SRC like FFHQ/CelebA-HQ faces (5-point landmarks, oriented square "
        "crop, reflect-and-blur padding) and write SIZE x SIZE PNGs under DST with the same relative paths. "
        "Landmarks come from --landmarks, else from insightface's SCRFD detector (--detector, default "
        "~/.insightface/models/buffalo_l/det_10g.onnx). Existing outputs are never replaced without --overwrite.")
    prepare.add_argument("source", metavar="SRC", help="folder of face photos (searched recursively)")
    prepare.add_argument("-o", "--output", required=True, metavar="DST", help="folder for the aligned PNGs")
    prepare.add_argument("--size", type=int, default=1024, help="output side in pixels (default 1024)")
    landmarks = prepare.add_mutually_exclusive_group()
    landmarks.add_argument("--detector", metavar="PATH",
                           help="insightface SCRFD model with keypoints (.onnx, or a model-pack folder)")
    landmarks.add_argument("--landmarks", metavar="FILE",
                           help="JSON or CSV: relative image path -> 5 (x, y) points (eyes, nose, mouth corners)")
    prepare.add_argument("--det-size", type=int, default=640, help="detector input size (default 640)")
    prepare.add_argument("--padding", choices=("ffhq", "reflect", "black"), default="ffhq",
                         help="fill where the crop leaves the photo (default: ffhq's reflect-and-blur)")
    existing = prepare.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace existing output files")
    existing.add_argument("--skip-existing", action="store_true", help="keep existing outputs, do the rest")
    prepare.add_argument("-v", "--verbose", action="store_true", help="print every file")
    prepare.set_defaults(run=_run_prepare)
    return prepare
