"""`grain fit|validate|test|predict`: LightningCLI over any stage (its class_path) and GrainDataModule.

    grain fit --config conf/trainer.yaml --config conf/data/celebahq_1024.yaml --config conf/stages/stage1.yaml
    grain fit ... --config conf/stages/stage2.yaml --init_from runs/stage1/checkpoints/last.ckpt
    grain fit ... --ckpt_path runs/stage1/checkpoints/last.ckpt        # resume the same stage
    grain fit ... --start_over       # a new run where an earlier one left checkpoints (moved aside, not deleted)

Bad settings are found before anything is written (no run folder, no W&B run): the data folder, the split
files, batch sizes, the preset name, the prior, `--init_from` (its parts must fit the stage), `--ckpt_path`, an
existing export file, and a checkpoint folder an earlier run of the stage already filled. Each is one error line
naming the setting and the file (exit code 2); `grain fit --debug ...` or GRAIN_PL_DEBUG=1 shows the traceback.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
DEBUG_FLAG = "--debug"
DEBUG_ENV = "GRAIN_PL_DEBUG"
# ModelCheckpoint folders that already hold checkpoints are renamed to "<folder><this>-<time>" by --start_over
PREVIOUS_RUN_SUFFIX = ".previous"


class FitSettingError(ValueError):
    """A `grain fit` setting that cannot work; the message names the setting and the file."""


def debug_requested(argv: Sequence[str] = ()) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def run_lightning_command(argv: Sequence[str]) -> int:
    """`grain fit|validate|test|predict ARGS`: the user's mistakes are one line on stderr (exit code 2), unless
    --debug (anywhere in ARGS) or GRAIN_PL_DEBUG=1 asks for the traceback."""
    argv = list(argv)
    debug = debug_requested(argv)
    argv = [argument for argument in argv if argument != DEBUG_FLAG]
    try:
        lightning_cli(argv)
    except (ValueError, OSError) as err:  # CheckpointError, FitSettingError, a missing file, a full disk, ...
        if debug:
            raise
        print(f"grain {argv[0]}: error: {describe_error(err)} (grain {argv[0]} {DEBUG_FLAG} shows the traceback)",
              file=sys.stderr)
        return 2
    return 0


def _raised_by_grain_pl(error: BaseException) -> bool:
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    package = str(Path(__file__).resolve().parents[1])
    return traceback is not None and traceback.tb_frame.f_code.co_filename.startswith(package)


def describe_error(error: BaseException, settings: Iterable[tuple[str, object]] = ()) -> str:
    """One line for an error: the innermost one grain_pl raised in its chain (jsonargparse and Lightning wrap
    them in their own), prefixed with the setting whose value (a file) it starts with."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(error)
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    ours = [error for error in chain if isinstance(error, FitSettingError)] or \
        [error for error in chain if _raised_by_grain_pl(error)] or chain
    cause = ours[-1] if not isinstance(ours[0], FitSettingError) else ours[0]
    text = str(cause).strip()
    message = text.splitlines()[0] if text else type(cause).__name__
    if isinstance(cause, OSError) and cause.filename and str(cause.filename) not in message:
        message = f"{cause.filename}: {message}"
    for key, value in settings:
        if isinstance(value, str | os.PathLike) and str(value) and message.startswith(f"{value}:"):
            return f"--{key} {message}"
    return message


def _setting_error(key: str, value: object, problem: str) -> FitSettingError:
    return FitSettingError(f"--{key} {value}: {problem}")


def _binary_config(args: Sequence[str]) -> str:
    """The first --config file in `args` that is not UTF-8 text ("?" if none is)."""
    values = [value for flag, value in zip(args, args[1:]) if flag == "--config"]
    values += [argument.split("=", 1)[1] for argument in args if argument.startswith("--config=")]
    for value in values:
        try:
            Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return value
    return "?"


def check_settings(subcommand: str, config) -> None:
    """Paths and numbers that can be checked before anything is built (FitSettingError naming the setting)."""
    from grain_pl.networks.config import PRESETS
    from grain_pl.weights.io import read_checkpoint, require_mapping

    data = config.get("data")
    if data is not None:
        data = data.get("init_args", data)
        data_dir = data.get("data_dir")
        if data_dir is not None and not Path(data_dir).is_dir():
            problem = "is a file, not a folder" if Path(data_dir).exists() else "no such folder"
            raise _setting_error("data.data_dir", data_dir, f"{problem} (expected the folder of training images)")
        for key in ("split_file", "celeba_partition_file", "celeba_hq_mapping_file"):
            if data.get(key) is not None and not Path(data[key]).is_file():
                raise _setting_error(f"data.{key}", data[key], "no such file")
        for key in ("batch_size", "val_batch_size"):
            if data.get(key) is not None and data[key] < 1:
                raise _setting_error(f"data.{key}", data[key], "must be 1 or more")
        if data.get("num_workers") is not None and data["num_workers"] < 0:
            raise _setting_error("data.num_workers", data["num_workers"], "must be 0 or more")

    model = config.get("model")
    model_args = (model.get("init_args") or {}) if model is not None and hasattr(model, "get") else {}
    resuming = bool(config.get("ckpt_path"))
    network = model_args.get("network")
    if isinstance(network, str) and network not in PRESETS:
        raise _setting_error("model.init_args.network", network, f"no such preset (known: {', '.join(PRESETS)})")
    for key in ("prior_path", "identity_weights"):
        path = model_args.get(key)
        if path is not None and not Path(path).is_file():
            raise _setting_error(f"model.init_args.{key}", path, "no such file")
    iterations = model_args.get("max_iterations")
    if iterations is not None and iterations < 1:
        raise _setting_error("model.init_args.max_iterations", iterations, "must be 1 or more")
    export_path = model_args.get("export_path")
    if subcommand == "fit" and export_path is not None and Path(export_path).exists():
        raise _setting_error("model.init_args.export_path", export_path, "already exists; move it or choose "
                             "another export_path (the run would refuse to overwrite it at its end)")

    init_from = config.get("init_from")
    if subcommand == "fit" and init_from and not resuming and not Path(init_from).is_file():
        raise _setting_error("init_from", init_from, "no such checkpoint (the previous stage's; has it run?)")
    ckpt_path = config.get("ckpt_path")
    if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry") and not str(ckpt_path).startswith(
            ("registry:", "s3://", "gs://", "http://", "https://")):
        if not Path(ckpt_path).is_file():
            raise _setting_error("ckpt_path", ckpt_path, "no such checkpoint")
        try:  # weights_only: a tampered file is refused here, before Lightning reads it
            checkpoint = require_mapping(read_checkpoint(ckpt_path), ckpt_path, "a Lightning checkpoint")
        except ValueError as err:
            raise FitSettingError(f"--ckpt_path {err}") from err
        if not isinstance(checkpoint.get("state_dict"), dict):
            raise _setting_error("ckpt_path", ckpt_path, "not a Lightning checkpoint (no 'state_dict' dict)")
        stage = (checkpoint.get("hyper_parameters") or {}).get("stage")
        model_class = str(model.get("class_path", "")).rsplit(".", 1)[-1] if hasattr(model, "get") else ""
        if stage and model_class and stage != model_class:
            raise _setting_error("ckpt_path", ckpt_path, f"a {stage} checkpoint, but the model is {model_class}: "
                                 "--ckpt_path resumes the same stage (--init_from starts from the previous one)")


def guard_checkpoint_folders(trainer, resuming: bool, start_over: bool) -> list[str]:
    """A new run of a stage must not write beside an earlier run's checkpoints: Lightning would name its own
    `last-v1.ckpt`, and the next stage (init_from: .../last.ckpt) would start from the earlier run.

    Refuses (FitSettingError) unless the run resumes (--ckpt_path) or `start_over` moves each such folder aside
    (renamed, nothing deleted). Returns a line per folder moved.
    """
    filled = []
    for callback in trainer.checkpoint_callbacks:
        folder = getattr(callback, "dirpath", None)
        if folder and Path(folder).is_dir() and any(Path(folder).glob("*.ckpt")):
            filled.append(Path(folder))
    if not filled or resuming:
        return []
    if not start_over:
        folder = filled[0]
        names = ", ".join(sorted(path.name for path in folder.glob("*.ckpt"))[:4])
        raise FitSettingError(
            f"{folder}: already holds the checkpoints of an earlier run ({names}); a new run would write beside "
            "them and the next stage would start from the earlier last.ckpt. Resume it with --ckpt_path "
            f"{folder / 'last.ckpt'}, or start over with --start_over (moves the folder to "
            f"{folder.name}{PREVIOUS_RUN_SUFFIX}-<time>; nothing is deleted)")
    moved = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in filled:
        target = folder.with_name(f"{folder.name}{PREVIOUS_RUN_SUFFIX}-{stamp}")
        suffix = 1
        while target.exists():
            target, suffix = folder.with_name(f"{folder.name}{PREVIOUS_RUN_SUFFIX}-{stamp}-{suffix}"), suffix + 1
        folder.rename(target)
        moved.append(f"--start_over: moved the earlier run's {folder} to {target}")
    return moved


def lightning_cli(argv: Sequence[str], run: bool = True):
    """`grain fit|validate|test|predict`: LightningCLI over any stage (class_path) and GrainDataModule.

    With run=False (tests, notebooks) it only parses and instantiates; argv then has no subcommand, and the
    checks that need one (data folder, checkpoint folders) are skipped.
    """
    from pytorch_lightning.cli import LightningCLI
    from pytorch_lightning.utilities import rank_zero_info

    from grain_pl.data import GrainDataModule
    from grain_pl.training import InitFromStage

    class GrainCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.add_argument("--init_from", type=str | None, default=None,
                                help="start from this previous-stage checkpoint (the parts the stage inherits)")
            parser.add_argument("--start_over", action="store_true",
                                help="start a new run although the stage's checkpoint folder holds an earlier "
                                f"run's checkpoints: the folder is renamed <folder>{PREVIOUS_RUN_SUFFIX}-<time> "
                                "(nothing is deleted)")

        def parse_arguments(self, parser, args) -> None:
            # the arguments always arrive as `args` (main passes sys.argv[1:]): Lightning's warning about having
            # both args and sys.argv would be printed by every `grain fit`
            try:
                self.config = parser.parse_args(args)
            except UnicodeDecodeError as err:  # a binary file given as --config; jsonargparse does not name it
                raise FitSettingError(f"--config {_binary_config(args)}: not a YAML text file ({err.reason})") from err

        @property
        def run_config(self):
            return self.config[self.subcommand] if self.subcommand else self.config

        def before_instantiate_classes(self) -> None:
            if self.subcommand:
                check_settings(self.subcommand, self.run_config)

        def instantiate_classes(self) -> None:
            try:
                super().instantiate_classes()
            except (ValueError, OSError) as err:  # e.g. a bad prior file, wrapped by jsonargparse's own error
                raise FitSettingError(describe_error(err, self.run_config.items())) from err

        def instantiate_trainer(self, **kwargs):
            config = self.run_config
            resuming = bool(config.get("ckpt_path"))
            if config.get("init_from"):
                init_from = InitFromStage(config["init_from"])
                if self.subcommand == "fit" and not resuming:
                    init_from.check(self.model)  # reads it now: wrong parts or a stale last.ckpt end here
                configured = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
                configured = configured if isinstance(configured, list) else [configured]
                kwargs["callbacks"] = [*configured, init_from]
            trainer = super().instantiate_trainer(**kwargs)
            if self.subcommand:
                try:  # the split now (it is kept): an empty folder or a bad split file ends before any run folder
                    self.datamodule.setup(self.subcommand)
                except (ValueError, OSError) as err:
                    raise FitSettingError(f"--data.data_dir {self.datamodule.data_dir}: "
                                          f"{describe_error(err)}") from err
            if self.subcommand == "fit":
                for line in guard_checkpoint_folders(trainer, resuming, bool(config.get("start_over"))):
                    rank_zero_info(line)
            return trainer

        def _run_subcommand(self, subcommand: str) -> None:
            try:
                super()._run_subcommand(subcommand)
            except (ValueError, OSError) as err:
                raise FitSettingError(describe_error(err, self.run_config.items())) from err

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
