"""The `grain` command.

    grain fit --config conf/trainer.yaml --config conf/data/celebahq_1024.yaml --config conf/stage1.yaml
    grain fit ... --config conf/stage2.yaml --init_from runs/stage1/checkpoints/last.ckpt
    grain fit ... --ckpt_path runs/stage1/checkpoints/last.ckpt        # resume the same stage

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
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from grain_pl.codec_cli import add_codec_commands
from grain_pl.evaluation_cli import add_evaluate_command
from grain_pl.faces_cli import add_prepare_command
from grain_pl.weights.io import CheckpointError


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grain", description="GRAIN: faithful extreme image rescaling. Training: grain fit|validate|test "
        "--config ... (LightningCLI; `grain fit --help`).")
    commands = parser.add_subparsers(dest="command", required=True)
    add_codec_commands(commands)

    convert = commands.add_parser("convert", help="convert public checkpoints to safetensors")
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

    add_prepare_command(commands)
    add_evaluate_command(commands)

    for sub in (stylegan2, irse50, grain):
        sub.add_argument("-o", "--output", required=True, help="the .safetensors file to write")
        sub.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return parser


LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def lightning_cli(argv: Sequence[str], run: bool = True):
    """`grain fit|validate|test|predict`: LightningCLI over any stage (class_path) and GrainDataModule.

    With run=False (tests, notebooks) it only parses and instantiates; argv then has no subcommand.
    """
    from pytorch_lightning.cli import LightningCLI

    from grain_pl.callbacks import InitFromStage
    from grain_pl.data import GrainDataModule

    class GrainCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--init_from", type=str | None, default=None,
                                help="start from this previous-stage checkpoint (the parts the stage inherits)")

        def instantiate_trainer(self, **kwargs):
            config = self.config[self.subcommand] if self.subcommand else self.config
            if config.get("init_from"):
                configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
                configured = configured if isinstance(configured, list) else [configured]
                kwargs["callbacks"] = [*configured, InitFromStage(config["init_from"])]
            return super().instantiate_trainer(**kwargs)

        def _parse_ckpt_path(self) -> None:
            # LightningCLI 2.6 merges a --ckpt_path checkpoint's hyper-parameters *over* the parsed configs: our
            # "stage"/"init_from" records are no __init__ arguments (the parse fails), and a resume could not change
            # e.g. max_iterations. The configs and the command line describe the run; ckpt_path restores its state.
            return

    # every run keeps its resolved config next to its logs, under a name no later run overwrites
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return GrainCLI(None, GrainDataModule, subclass_mode_model=True, args=list(argv), run=run,
                    auto_configure_optimizers=False,
                    save_config_kwargs={"overwrite": False, "config_filename": f"config-{stamp}.yaml"})


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        lightning_cli(argv)
        return 0
    args = build_parser().parse_args(argv)
    try:
        print(args.run(args))
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"grain {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
