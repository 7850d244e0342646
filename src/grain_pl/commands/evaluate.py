"""`grain evaluate`: GRAIN and the baselines on a test folder (the protocol: docs/evaluation.md).

    grain evaluate data/test --model grain.safetensors -o runs/eval
    grain evaluate data/test --model stage4.ckpt --prior ffhq.pt -o runs/eval --identity-weights model_ir_se50.pth
    grain evaluate data/test --hr-size 1024 --lr-size 16 -o runs/baselines       # baselines only, no model
    grain evaluate data/test --model grain.safetensors -o runs/eval --methods grain bicubic jpeg_matched jpeg_q1
    grain evaluate data/test --model grain.safetensors -o runs/eval --lr-codec jpeg:90,jpeg:75,webp:90
    grain evaluate data/test --model grain.safetensors --upscaler upscale.safetensors -o runs/eval

Wired into `grain` by `add_evaluate_command(subparsers)`; the command's `run` returns the text `grain` prints and
raises ValueError / FileExistsError / CheckpointError for the user's mistakes and OSError
for a folder it cannot write (each printed as one error line).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_evaluate_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `evaluate` to the `grain` command's subparsers and return its parser."""
    from grain_pl.evaluation import DEFAULT_METHODS, EVALUATION_RESIZE_POLICIES

    parser = subparsers.add_parser(
        "evaluate", help="GRAIN vs. bilinear/bicubic/JPEG/WebP/AVIF on a test folder: per-image CSV, summary, R-D "
        "plot",
        description="Evaluate GRAIN through the real 8-bit PNG round trip, and the baselines, on every image of "
                    "FOLDER (HR metrics, and the stored LR against the HR's bicubic thumbnail); writes "
                    "per_image.csv, summary.json and rd_plot.png into OUTDIR. The protocol: docs/evaluation.md.")
    parser.add_argument("folder", metavar="FOLDER", help="test images (searched recursively)")
    parser.add_argument("--model", metavar="CKPT", help="grain_pl model file (.safetensors) or stage .ckpt; "
                        "leave out to run the baselines alone (then give --hr-size and --lr-size)")
    parser.add_argument("--prior", metavar="PATH", help="StyleGAN2 prior for a stage .ckpt that does not name one "
                        "(--model's and --upscaler's)")
    parser.add_argument("--upscaler", metavar="CKPT", help="a GRAIN model file or stage .ckpt that decodes ordinary "
                        "thumbnails: row grain_upscale, the bicubic row's stored thumbnail decoded by it")
    parser.add_argument("--lr-codec", action="append", metavar="CODEC:Q[,...]",
                        help="per setting, a row per model (and for bicubic) with its stored LR re-encoded by "
                        "Pillow, e.g. jpeg:90,jpeg:75,webp:90 (codecs jpeg, webp, avif; quality 1..100; repeatable)")
    parser.add_argument("-o", "--output", metavar="OUTDIR", required=True, help="folder for the results")
    parser.add_argument("--identity-weights", metavar="PATH", help="pSp's model_ir_se50.pth: identity cosine")
    parser.add_argument("--arcface", metavar="PATH", help="ArcFace weights for the 'arcface' column "
                        "(insightface's w600k_r50.onnx or its model-pack folder; needs the faces extra)")
    parser.add_argument("--methods", nargs="+", metavar="METHOD",
                        help=f"default: all that apply ({' '.join(DEFAULT_METHODS)}); any jpeg_qN / webp_qN / "
                        "avif_qN")
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N images")
    parser.add_argument("--hr-size", type=int, help="HR size without a model (must match the model's if given)")
    parser.add_argument("--lr-size", type=int, help="LR size without a model (must match the model's if given)")
    parser.add_argument("--resize", choices=EVALUATION_RESIZE_POLICIES, default="error",
                        help="test images that are not HR-sized: error (default), resize, center_crop")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default cpu)")
    parser.add_argument("--save-images", action="store_true",
                        help="also write every output image and every stored file (LR PNG, JPEG, WebP, AVIF)")
    parser.add_argument("--overwrite", action="store_true", help="replace the results of an earlier run in OUTDIR")
    parser.set_defaults(run=run_evaluate)
    return parser


def load_arcface(path: str) -> Any:
    """insightface's ArcFace (grain_pl.metrics.arcface), for the `arcface` column; needs the `faces` extra."""
    from grain_pl.metrics.arcface import load_arcface as load

    return load(path)


def check_device(name: str) -> None:
    """A ValueError naming --device unless torch knows the device and this machine has it."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name}: not a torch device (cpu, cuda, cuda:1, mps, ...)") from error
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"--device {name}: no such CUDA device is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available")


def run_evaluate(args: argparse.Namespace) -> str:
    """Run `grain evaluate` from parsed arguments; returns the summary table."""
    from grain_pl.evaluation import check_output_dir, evaluate_folder, format_summary, parse_lr_codecs

    try:
        check_output_dir(args.output, args.overwrite)  # refuse before loading anything
        check_device(args.device)
        lr_codecs = parse_lr_codecs(args.lr_codec)  # a bad setting fails before the model loads
        if args.prior is not None and args.model is None and args.upscaler is None:
            raise ValueError("--prior only applies together with --model or --upscaler")
        if lr_codecs and args.model is None and args.upscaler is None:
            raise ValueError("--lr-codec re-encodes a model's stored LR: give --model or --upscaler")
        arcface = load_arcface(args.arcface) if args.arcface is not None else None  # before the big model load
        model = upscaler = None
        if args.model is not None or args.upscaler is not None:
            from grain_pl.codec import GrainModule

            files = [path for path in (args.model, args.upscaler) if path is not None]
            # --prior serves whichever of the two is a stage .ckpt; a model file carries its own (and refuses one)
            stage_checkpoints = [path for path in files if Path(path).suffix != ".safetensors"]

            def load(path: str) -> Any:
                prior = args.prior if path in stage_checkpoints or not stage_checkpoints else None
                return GrainModule.from_checkpoint(path, prior_path=prior, map_location=args.device)

            model = load(args.model) if args.model is not None else None
            upscaler = load(args.upscaler) if args.upscaler is not None else None
        summary = evaluate_folder(
            model, args.folder, args.output, methods=args.methods, identity_weights=args.identity_weights,
            arcface_model=arcface, resize=args.resize, device=args.device, limit=args.limit,
            hr_size=args.hr_size, lr_size=args.lr_size, overwrite=args.overwrite, save_images=args.save_images,
            upscaler=upscaler, lr_codecs=[str(setting) for setting in lr_codecs],
            settings={"checkpoint": args.model, "prior": args.prior, "arcface_weights": args.arcface,
                      "upscaler_checkpoint": args.upscaler},
            progress=lambda line: print(line, file=sys.stderr, flush=True))
    except FileNotFoundError as error:  # a missing folder or weight file: a user error like the others
        raise ValueError(f"{error.filename}: {error.strerror}" if error.strerror and error.filename else str(error)
                         ) from error
    output = Path(args.output)
    skipped = summary["settings"].get("skipped_summary")
    return "\n".join([format_summary(summary), *([f"{args.folder}: {skipped}"] if skipped else []),
                      f"wrote {output / 'per_image.csv'}, {output / 'summary.json'}, {output / 'rd_plot.png'}"])
