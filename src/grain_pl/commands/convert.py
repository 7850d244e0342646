"""`grain convert`: public checkpoints -> safetensors.

    grain convert stylegan2 stylegan2-ffhq-config-f.pt -o prior.safetensors
    grain convert irse50 model_ir_se50.pth -o irse50.safetensors
    grain convert grain --preset paper-1024-lr16 --prior stylegan2-ffhq-config-f.pt \
        --invrrdb invRRDB_model.pt --code-stylegan codeStyleGAN_model.pt --fusion Fusion_model.pt \
        -o grain-paper-1024-lr16.safetensors

Every file is read with `torch.load(weights_only=True)`; every output is safetensors, and an existing output
is never replaced without `--overwrite`. `grain convert grain` needs a file for every part (prior, invrrdb,
code-stylegan, fusion); `--random-parts fusion ...` writes the listed parts freshly initialised, on purpose, with a
warning each. A write that fails (disk full, read-only folder) is one error line and leaves no file behind.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

# `grain convert grain`: part -> (its option, the GRAIN modules its file fills)
GRAIN_PARTS = {
    "prior": ("--prior", "generator, latent_avg"),
    "invrrdb": ("--invrrdb", "encoder, decoder"),
    "code-stylegan": ("--code-stylegan", "latent_codes"),
    "fusion": ("--fusion", "fusion"),
}


class ConvertError(ValueError):
    """A `grain convert` that cannot be done as asked; the message names the file or the option."""


def _write(output: str, save: Callable[[], object]) -> None:
    """Run `save()` (an atomic write of `output`): a full disk or a folder we may not write to is one line."""
    try:
        save()
    except FileExistsError:
        raise
    except OSError as err:  # atomic_write removed its temporary file: nothing half-written is left
        reason = err.strerror or str(err)
        raise ConvertError(f"{output}: cannot write it: {reason} (nothing was written)") from err


def _convert_stylegan2(args: argparse.Namespace) -> str:
    from grain_pl.weights.io import NESTED_GROUPS_KEY, flatten_checkpoint, save_safetensors
    from grain_pl.weights.stylegan2_rosinality import load_stylegan2_prior

    generator, discriminator, latent_avg = load_stylegan2_prior(args.input)
    checkpoint = {"g_ema": generator.state_dict(), "latent_avg": latent_avg}
    if discriminator is not None:
        checkpoint["d"] = discriminator.state_dict()
    flat, groups = flatten_checkpoint(checkpoint)
    _write(args.output, lambda: save_safetensors(flat, args.output, {
        NESTED_GROUPS_KEY: groups, "source": Path(args.input).name, "format": "rosinality-stylegan2"},
        overwrite=args.overwrite))
    parts = "g_ema, latent_avg" + (", d" if discriminator is not None else "")
    return f"{args.input} -> {args.output} ({parts}; size {generator.size})"


def _convert_irse50(args: argparse.Namespace) -> str:
    from grain_pl.weights.io import save_safetensors
    from grain_pl.weights.irse50 import load_irse50

    network = load_irse50(args.input)
    _write(args.output, lambda: save_safetensors(network.state_dict(), args.output, {
        "source": Path(args.input).name, "format": "irse50"}, overwrite=args.overwrite))
    return f"{args.input} -> {args.output} (IR-SE50, {len(network.state_dict())} tensors)"


def _convert_grain(args: argparse.Namespace) -> str:
    from grain_pl.networks import GRAIN, get_preset
    from grain_pl.weights.grain_checkpoint import load_prior_into, save_grain
    from grain_pl.weights.grain_original import load_official_grain

    files = {part: getattr(args, option[2:].replace("-", "_")) for part, (option, _) in GRAIN_PARTS.items()}
    random_parts = list(dict.fromkeys(args.random_parts or []))
    both = [part for part in random_parts if files[part]]
    if both:
        raise ConvertError(f"--random-parts {' '.join(both)}: a weight file was given for it as well "
                           f"({', '.join(f'{GRAIN_PARTS[part][0]} {files[part]}' for part in both)}); choose one")
    missing = [part for part, path in files.items() if not path and part not in random_parts]
    if missing:
        options = ", ".join(f"{GRAIN_PARTS[part][0]} ({GRAIN_PARTS[part][1]})" for part in missing)
        raise ConvertError(f"no weight file for {options}: pass the file(s), or --random-parts {' '.join(missing)} "
                           "to write those parts freshly initialised (random) on purpose")
    if Path(args.output).exists() and not args.overwrite:
        raise FileExistsError(f"{args.output}: already exists (pass --overwrite to replace it)")
    grain = GRAIN(get_preset(args.preset))  # the --random-parts keep this fresh initialisation
    lines = []
    if files["prior"]:
        load_prior_into(grain, files["prior"])
        lines.append(f"{files['prior']} -> generator, latent_avg")
    lines += load_official_grain(grain, invrrdb=files["invrrdb"], code_stylegan=files["code-stylegan"],
                                 fusion=files["fusion"])
    for part in random_parts:
        print(f"grain convert: warning: {GRAIN_PARTS[part][1]} ({part}): random weights, no file "
              "(--random-parts); images decoded with this model show it", file=sys.stderr)
    metadata = {"preset": args.preset}
    if random_parts:
        metadata["random_parts"] = ",".join(random_parts)  # the file says so too
    _write(args.output, lambda: save_grain(grain, args.output, overwrite=args.overwrite, **metadata))
    random_note = f"; random: {', '.join(random_parts)}" if random_parts else ""
    return "\n".join(lines + [f"wrote {args.output} (preset {args.preset}{random_note})"])


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
    grain.add_argument("--random-parts", nargs="+", choices=list(GRAIN_PARTS), metavar="PART",
                       help="parts to write freshly initialised (random) because no file is given for them, on "
                       f"purpose: {', '.join(GRAIN_PARTS)}. Without it every part needs its file")
    grain.set_defaults(run=_convert_grain)

    for sub in (stylegan2, irse50, grain):
        sub.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return convert
