"""`grain export`: a GRAIN model in a form that runs without torch.

    grain export --onnx grain_onnx --model grain.safetensors     # encoder.onnx, decoder.onnx, grain_onnx.json,
                                                                # onnx_decode.py (docs/codec.md, "Decode anywhere")
    grain export --onnx grain_onnx --model runs/final/checkpoints/last.ckpt --prior stylegan2.pt --verify

An existing output file is never replaced without `--overwrite`; each file is written atomically.
"""

from __future__ import annotations

import argparse


def add_export_command(subparsers) -> argparse.ArgumentParser:
    export = subparsers.add_parser(
        "export", help="a model as ONNX graphs (decode with onnxruntime, without torch)",
        description="Write the model's encoder and decoder as ONNX graphs with a dynamic batch (decoder: the "
                    "decoder, latent codes, StyleGAN2 prior with its fixed noise and fusion), a JSON of their "
                    "sizes and value ranges, and onnx_decode.py, which decodes LR PNGs with numpy, Pillow and "
                    "onnxruntime alone.")
    export.add_argument("--onnx", required=True, metavar="FOLDER",
                        help="the folder to write encoder.onnx, decoder.onnx, grain_onnx.json and onnx_decode.py to")
    export.add_argument("--model", required=True, metavar="PATH",
                        help="a grain_pl model file (.safetensors) or a stage checkpoint (.ckpt)")
    export.add_argument("--prior", metavar="PATH",
                        help="StyleGAN2 prior for a stage .ckpt (default: the checkpoint's prior_path)")
    export.add_argument("--opset", type=int, help="ONNX opset (default: grain_pl.codec.onnx_export.ONNX_OPSET, 17)")
    export.add_argument("--overwrite", action="store_true", help="replace those files where they exist")
    export.add_argument("--verify", action="store_true",
                        help="afterwards, run both graphs with onnxruntime on a random batch of 2 and report the "
                             "largest difference from PyTorch (needs onnxruntime; takes two encodes and decodes)")
    export.set_defaults(run=run_export)
    return export


def run_export(args: argparse.Namespace) -> str:
    import importlib.util

    from grain_pl.codec import GrainModule
    from grain_pl.codec.onnx_export import check_destination, export_onnx, verify_onnx

    needed = ["onnx"] + (["onnxruntime"] if args.verify else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ValueError(f"--onnx{' --verify' if args.verify else ''} needs the package(s) {', '.join(missing)}: "
                         "pip install 'grain_pl[onnx]' (make install has them)")
    check_destination(args.onnx, args.overwrite)  # before loading the model
    module = GrainModule.from_checkpoint(args.model, prior_path=args.prior)
    written = export_onnx(module, args.onnx, overwrite=args.overwrite, **({"opset": args.opset} if args.opset else {}))
    lines = [f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)" if path.suffix == ".onnx" else f"wrote {path}"
             for path in written]
    if args.verify:
        differences = verify_onnx(module, args.onnx)
        lines.append("onnxruntime against PyTorch on a random batch of 2, largest absolute difference: " +
                     ", ".join(f"{name} {value:.2e}" for name, value in differences.items()))
    lines.append(f"exported {module.describe()}; decode without torch: python {written[-1]} LR.png --model "
                 f"{args.onnx}")
    return "\n".join(lines)
