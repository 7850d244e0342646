"""The `grain` command: one module per subcommand, all reached through `grain_pl.commands.main`.

    grain fit|validate|test|predict --config ...   training (fit.py, LightningCLI; --debug: tracebacks)
    grain encode|decode ...                         the codec on files and folders (codec.py)
    grain evaluate ...                              GRAIN against the baselines (evaluate.py)
    grain prepare ...                               align raw face photos for training (prepare.py)
    grain convert stylegan2|irse50|grain ...        public checkpoints -> safetensors (convert.py)
    grain demo                                      the embedded default: train and evaluate on bundled photos (demo.py)
    grain setup-lpips                               fetch and convert LPIPS's AlexNet for offline use (setup_lpips.py)

Each module adds its parser with `add_*_command(subparsers)`; the handler (`args.run`) returns the text to print
and raises one of the errors below for the user's mistakes, which `main` prints as one line (exit code 2).
Heavy imports (Lightning, the networks) happen when a command runs, so `grain --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from grain_pl.commands.codec import add_codec_commands
from grain_pl.commands.convert import add_convert_command
from grain_pl.commands.demo import add_demo_command
from grain_pl.commands.evaluate import add_evaluate_command
from grain_pl.commands.fit import LIGHTNING_COMMANDS, lightning_cli, run_lightning_command
from grain_pl.commands.prepare import add_prepare_command
from grain_pl.commands.setup_lpips import add_setup_lpips_command
from grain_pl.weights.io import CheckpointError

__all__ = ["build_parser", "lightning_cli", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grain", description="GRAIN: faithful extreme image rescaling. Training: grain fit|validate|test "
        "--config ... (LightningCLI; `grain fit --help`).")
    commands = parser.add_subparsers(dest="command", required=True)
    add_codec_commands(commands)
    add_convert_command(commands)
    add_prepare_command(commands)
    add_evaluate_command(commands)
    add_demo_command(commands)
    add_setup_lpips_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in LIGHTNING_COMMANDS:
        return run_lightning_command(argv)  # its own one-line errors; --debug shows the traceback
    args = build_parser().parse_args(argv)
    try:
        print(args.run(args))
    except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as err:
        print(f"grain {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0

