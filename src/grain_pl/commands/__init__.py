"""The `grain` command: one module per subcommand, all reached through `grain_pl.commands.main`.

    grain fit|validate|test|predict --config ...   training (fit.py, LightningCLI; --debug: tracebacks)
    grain encode|decode|upscale ...                 the codec on files and folders (codec.py)
    grain evaluate ...                              GRAIN against the baselines (evaluate.py)
    grain prepare ...                               align raw face photos for training (prepare.py)
    grain convert stylegan2|irse50|grain ...        public checkpoints -> safetensors (convert.py)
    grain export --onnx DIR --model ...             a model as ONNX graphs, decoded without torch (export.py)
    grain demo                                      the embedded default: train and evaluate on bundled photos (demo.py)
    grain setup-lpips                               fetch and convert LPIPS's AlexNet for offline use (setup_lpips.py)

Each module adds its parser with `add_*_command(subparsers)`; the handler (`args.run`) returns the text to print
and raises ValueError / FileExistsError / FileNotFoundError / CheckpointError for the user's mistakes. `main`
prints every failure as one line on stderr, never a traceback unless `--debug` (anywhere on the command line) or
GRAIN_PL_DEBUG=1 asks for it:
    the user's mistakes, and OSErrors (a full disk, a read-only folder: errno text and file)   exit code 2
    MemoryError, and any other exception (said to be unexpected: a bug to report)              exit code 1
    Ctrl-C (KeyboardInterrupt): what was written so far and how to go on                       exit code 130
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
from grain_pl.commands.export import add_export_command
from grain_pl.commands.fit import (
    DEBUG_FLAG,
    LIGHTNING_COMMANDS,
    debug_requested,
    lightning_cli,
    run_lightning_command,
)
from grain_pl.commands.prepare import add_prepare_command
from grain_pl.commands.setup_lpips import add_setup_lpips_command
from grain_pl.weights.io import CheckpointError

__all__ = ["build_parser", "describe_failure", "lightning_cli", "main"]

INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as a shell reports a Ctrl-C
# What a Ctrl-C leaves behind, per command (an interrupt raised with a message of its own says it instead).
_WRITTEN_SO_FAR_NOTE = "outputs written so far are complete (each is written atomically); rerun with --skip-existing"
INTERRUPT_NOTES = {
    "encode": _WRITTEN_SO_FAR_NOTE,
    "decode": _WRITTEN_SO_FAR_NOTE,
    "upscale": _WRITTEN_SO_FAR_NOTE,
    "prepare": _WRITTEN_SO_FAR_NOTE,
    "convert": "nothing half-written is left (outputs are written atomically)",
    "export": "nothing half-written is left (outputs are written atomically)",
    "setup-lpips": "nothing half-written is left; rerun it",
    "evaluate": "evaluate writes its results at the end: per_image.csv, summary.json and rd_plot.png were not written",
    "demo": "the run folder keeps the stages finished so far; a rerun starts a new run folder",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="grain", description="GRAIN: faithful extreme image rescaling. Training: grain fit|validate|test "
        "--config ... (LightningCLI; `grain fit --help`).")
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="show the traceback of a failure (anywhere on the line; or GRAIN_PL_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)
    add_codec_commands(commands)
    add_convert_command(commands)
    add_export_command(commands)
    add_prepare_command(commands)
    add_evaluate_command(commands)
    add_demo_command(commands)
    add_setup_lpips_command(commands)
    return parser


def describe_failure(error: BaseException) -> tuple[str, int]:
    """(one line, exit code) for an exception a command raised (see the module docstring)."""
    if isinstance(error, OSError) and error.strerror:  # a full disk, a read-only folder: errno text and the file
        files = [str(name) for name in (error.filename, error.filename2) if name is not None]
        return (f"{' -> '.join(files)}: {error.strerror}" if files else error.strerror), 2
    if isinstance(error, (CheckpointError, ValueError, OSError)):  # OSError: our own messages name the file
        return str(error).strip() or type(error).__name__, 2  # all of it: some list the files that failed
    if isinstance(error, MemoryError) or type(error).__name__ == "OutOfMemoryError":  # torch's is a RuntimeError
        detail = f" ({_first_line(error)})" if str(error).strip() else ""
        return f"out of memory{detail}; a smaller input, batch size or preset may fit", 1
    return f"unexpected {type(error).__name__}: {_first_line(error)} (a bug: please report it with the traceback " \
           f"that {DEBUG_FLAG} shows)", 1


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)  # --debug anywhere (before or after the command), or GRAIN_PL_DEBUG=1
    argv = [argument for argument in argv if argument != DEBUG_FLAG]
    command = next((argument for argument in argv if not argument.startswith("-")), "")
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            # its own one-line errors for settings, files and full disks; the rest is reported below
            return run_lightning_command([*argv, *([DEBUG_FLAG] if debug else [])])
        args = build_parser().parse_args(argv)
        print(args.run(args))
    except KeyboardInterrupt as interrupt:
        if debug:
            raise
        note = str(interrupt) or INTERRUPT_NOTES.get(command, "")
        print(f"grain {command}: interrupted{f'; {note}' if note else ''}", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except Exception as error:
        if debug:
            raise
        message, code = describe_failure(error)
        hint = "" if DEBUG_FLAG in message else f" ({DEBUG_FLAG} shows the traceback)" if code == 1 else ""
        print(f"grain {command}: error: {message}{hint}", file=sys.stderr)
        return code
    return 0

