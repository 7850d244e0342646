"""`grain convert`: public checkpoints -> safetensors.

    grain convert stylegan2 stylegan2-ffhq-config-f.pt -o prior.safetensors
    grain convert irse50 model_ir_se50.pth -o irse50.safetensors
    grain convert grain --preset paper-1024-lr16 --prior stylegan2-ffhq-config-f.pt \
        --invrrdb invRRDB_model.pt --code-stylegan codeStyleGAN_model.pt --fusion Fusion_model.pt \
        -o grain-paper-1024-lr16.safetensors

Every file is read with `torch.load(weights_only=True)`; every output is safetensors, and an existing output
is never replaced without `--overwrite`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _convert_stylegan2(args: argparse.Namespace) -> str:
    from grain_pl.weights.io import NESTED_GROUPS_KEY, flatten_checkpoint, save_safetensors
    from grain_pl.weights.stylegan2_rosinality import load_stylegan2_prior

    generator, discriminator, latent_avg = load_stylegan2_prior(args.input)
    checkpoint = {"g_ema": generator.state_dict(), "latent_avg": latent_avg}
    if discriminator is not None:
        checkpoint["d"] = discriminator.state_dict()
    flat, groups = flatten_checkpoint(checkpoint)
    save_safetensors(flat, args.output, {NESTED_GROUPS_KEY: groups, "source": Path(args.input).name,
                                         "format": "rosinality-stylegan2"}, overwrite=args.overwrite)
    parts = "g_ema, latent_avg" + (", d" if discriminator is not None else "")
    return f"{args.input} -> {args.output} ({parts}; size {generator.size})"


def _convert_irse50(args: argparse.Namespace) -> str:
    from grain_pl.weights.io import save_safetensors
    from grain_pl.weights.irse50 import load_irse50

    network = load_irse50(args.input)
    save_safetensors(network.state_dict(), args.output, {"source": Path(args.input).name, "format": "irse50"},
                     overwrite=args.overwrite)
    return f"{args.input} -> {args.output} (IR-SE50, {len(network.state_dict())} tensors)"


def _convert_grain(args: argparse.Namespace) -> str:
    from grain_pl.networks import GRAIN, get_preset
    from grain_pl.weights.grain_checkpoint import load_prior_into, save_grain
    from grain_pl.weights.grain_original import load_official_grain

    if Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"{args.output}: already exists (pass --overwrite to replace it)")
    grain = GRAIN(get_preset(args.preset))  # parts without a file keep their fresh initialisation
    lines = []
    if args.prior:
        load_prior_into(grain, args.prior)
        lines.append(f"{args.prior} -> generator, latent_avg")
    lines += load_official_grain(grain, invrrdb=args.invrrdb, code_stylegan=args.code_stylegan, fusion=args.fusion)
    save_grain(grain, args.output, overwrite=args.overwrite, preset=args.preset)
    return "\n".join(lines + [f"wrote {args.output} (preset {args.preset})"])



def add_convert_command(subparsers) -> argparse.ArgumentParser:
    """Add `convert stylegan2|irse50|grain` to the `grain` command's subparsers."""
    convert = subparsers.add_parser("convert", help="convert public checkpoints to safetensors")
    kinds = convert.add_subparsers(dest="kind", required=True)

    stylegan2 = kinds.add_parser("stylegan2", help="a rosinality StyleGAN2 file (g_ema, latent_avg, d)")
    stylegan2.add_argument("input")
    stylegan2.set_defaults(run=_convert_stylegan2)

    irse50 = kinds.add_parser("irse50", help="pSp's model_ir_se50.pth (identity loss)")
    irse50.add_argument("input")
    irse50.set_defaults(run=_convert_irse50)

    grain = kinds.add_parser("grain", help="the official GRAIN module files (+ prior) -> one grain_pl model file")
    grain.add_argument("--preset", default="paper-1024-lr16")
    grain.add_argument("--prior", help="rosinality StyleGAN2 file (stylegan2-ffhq-config-f.pt)")
    grain.add_argument("--invrrdb", help="invRRDB_model.pt (encoder + decoder)")
    grain.add_argument("--code-stylegan", help="codeStyleGAN_model.pt (latent-code bank)")
    grain.add_argument("--fusion", help="Fusion_model.pt (fusion decoder)")
    grain.set_defaults(run=_convert_grain)

    for sub in (stylegan2, irse50, grain):
        sub.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return convert
