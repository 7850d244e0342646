"""`grain encode`, `grain decode` and `grain upscale`: the codec on the command line.

    grain encode photo.png --model grain-paper-1024-lr16.safetensors                 # -> photo.lr.png
    grain encode photos/ -o lr/ --model model.safetensors --resize center_crop      # keeps the folder layout
    grain decode lr/ -o hr/ --model model.safetensors                               # every .png under lr/
    grain decode photo.lr.png -o photo.hr.png --model runs/final/last.ckpt --prior stylegan2-ffhq-config-f.pt
    grain upscale thumbs/ -o hr/ --model upscaler.safetensors                        # any LR-sized JPEG/PNG/WebP

Every file problem prints one line `grain encode: error: FILE: ...` on stderr and the run goes on with the next
file; the exit code is 2 when any file failed. An existing output is never replaced without `--overwrite`.

This module only builds the argument parsers; the codec (Lightning, the networks) is imported when a command
runs, so `grain --help` stays fast. `grain_pl.commands` adds the commands with `add_codec_commands(subparsers)`.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from grain_pl.io.images import DETERMINISTIC_RESIZE_POLICIES as RESIZE_CHOICES


def add_codec_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add `encode`, `decode` and `upscale` to the subparsers of the `grain` parser (each sets `run`)."""
    encode = subparsers.add_parser(
        "encode", help="images -> tiny 8-bit LR PNGs",
        description="Encode images into LR PNGs (the smallest lossless PNG, with the model named in its text "
                    "chunks). Without -o: photo.jpg -> photo.lr.png next to it.")
    encode.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, or folders searched recursively (jpg, png, webp, tif, bmp, ppm)")
    encode.add_argument("--resize", choices=RESIZE_CHOICES, default="error",
                        help="images that are not HRxHR: 'error' (default: name the file and both sizes), "
                             "'resize' (antialiased bilinear, stretches), 'center_crop' (shorter side scaled, "
                             "then the central square)")
    encode.set_defaults(run=run_encode)

    decode = subparsers.add_parser(
        "decode", help="LR PNGs -> HR PNGs",
        description="Decode LR PNGs into HR PNGs; deterministic (same LR, checkpoint, device and batch size: "
                    "same bytes). Without -o: photo.lr.png -> photo.hr.png next to it.")
    decode.add_argument("inputs", nargs="+", metavar="INPUT", help="LR PNG files, or folders of them (recursive)")
    decode.add_argument("--allow-lossy-lr", action="store_true",
                        help="decode LRs that cannot be the exact PNG encode wrote (JPEG or lossy WebP, transparent "
                             "pixels, 16 bits per channel); refused by default, as the result is not faithful")
    decode.set_defaults(run=run_decode)

    upscale = subparsers.add_parser(
        "upscale", help="ordinary thumbnails (any LR-sized image) -> HR PNGs",
        description="Upscale thumbnails that anyone made (an antialiased downscale, saved as PNG, JPEG or WebP) "
                    "into HR PNGs with the decoder of a model trained on them (encoder: bicubic, e.g. `grain demo "
                    "--upscaler`); a model with a learned encoder runs too, with a note. Input rules as decode's, "
                    "less the lossy formats. Without -o: thumb.jpg -> thumb.hr.png next to it.")
    upscale.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="thumbnails of the model's LR size, or folders searched recursively (jpg, png, webp, "
                              "tif, bmp, ppm)")
    upscale.set_defaults(run=run_upscale)

    for command in (encode, decode, upscale):
        command.add_argument("-o", "--output",
                             help="output file (one input file) or folder (several inputs, or a name ending in "
                                  "/); folder inputs keep their layout under it")
        command.add_argument("--model", required=True, metavar="PATH",
                             help="a grain_pl model file (.safetensors) or a stage checkpoint (.ckpt)")
        command.add_argument("--prior", metavar="PATH",
                             help="StyleGAN2 prior for a stage .ckpt (default: the checkpoint's prior_path)")
        existing = command.add_mutually_exclusive_group()
        existing.add_argument("--overwrite", action="store_true", help="replace existing output files")
        existing.add_argument("--skip-existing", action="store_true",
                              help="keep existing output files and do the rest (a re-run after an interruption: "
                                   "outputs are written atomically, so an existing one is complete)")
        command.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
        command.add_argument("--batch-size", type=int, default=1,
                             help="images per forward pass (default 1: each output then depends on its own "
                                  "input only; other sizes can change a pixel by one level)")


def run_encode(args: argparse.Namespace) -> str:
    return _run(args, "encode")


def run_decode(args: argparse.Namespace) -> str:
    return _run(args, "decode")


def run_upscale(args: argparse.Namespace) -> str:
    return _run(args, "upscale")


def _run(args: argparse.Namespace, kind: str) -> str:
    """Run one command; per-file errors go to stderr as they happen, a summary error ends a partial run."""
    import torch

    from grain_pl.codec import CodecError, GrainModule

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        # the same input gives the same bytes on every run
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    def report(source: Path, destination: Path | None, error: CodecError | None) -> None:
        if error is not None:
            print(f"grain {kind}: error: {error}", file=sys.stderr, flush=True)
        else:
            print(f"{source} -> {destination}", flush=True)

    def warn(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"grain {kind}: warning: {message}", file=sys.stderr, flush=True)  # one line, no source excerpt

    with warnings.catch_warnings():
        warnings.showwarning = warn  # restored when the block ends
        module = GrainModule.from_checkpoint(args.model, prior_path=args.prior, map_location=args.device)
        options = dict(overwrite=args.overwrite, skip_existing=args.skip_existing, batch_size=args.batch_size,
                       on_result=report)
        if kind == "encode":
            result = module.encode_paths(args.inputs, args.output, resize=args.resize, **options)
        elif kind == "upscale":
            if not module.is_upscaler:
                print(f"grain upscale: note: {module.describe()} has a learned encoder: it was trained to decode "
                      "the LRs it makes itself (grain encode), not ordinary thumbnails; upscaling anyway (a model "
                      "trained with encoder: bicubic is made for them)", file=sys.stderr, flush=True)
            result = module.upscale_paths(args.inputs, args.output, **options)
        else:
            result = module.decode_paths(args.inputs, args.output, allow_lossy_lr=args.allow_lossy_lr, **options)
    done, failed = len(result.written), len(result.failed)
    skipped = f"; {result.skipped_summary()}" if result.skipped else ""
    if failed:
        raise ValueError(f"{failed} of {done + failed} file(s) failed (see above); {done} written{skipped}")
    return f"{kind}d {done} file(s) with {module.describe()}{skipped}"
