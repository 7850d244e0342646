"""Experiment loggers: W&B, offline by default, or CSV.

Offline W&B needs no account and touches no network: the run is written under `<save_dir>/wandb/offline-run-*`
and can be uploaded later with `wandb sync`. Going online is an explicit choice: `WANDB_MODE=online`.
`GRAIN_PL_NO_WANDB=1` switches W&B off wherever grain_pl builds its logger (`GrainLogger`, `make_logger`): the
run then logs to CSV files instead.

    trainer = pl.Trainer(logger=GrainLogger(name="stage1"))

or, in a LightningCLI YAML (what conf/ does):

    trainer:
      logger:
        class_path: grain_pl.training.GrainLogger
        init_args: {name: stage1}
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

DEFAULT_PROJECT = "grain_pl"
DEFAULT_SAVE_DIR = "runs"
NO_WANDB_ENV = "GRAIN_PL_NO_WANDB"
_TRUE_STRINGS = ("1", "true", "yes", "on")


def wandb_mode_from_env() -> str:
    """The W&B mode to use: "online" only if WANDB_MODE=online, "disabled" if WANDB_MODE=disabled, else "offline"."""
    requested = os.environ.get("WANDB_MODE", "").strip().lower()
    return requested if requested in ("online", "disabled") else "offline"


def wandb_disabled_by_env() -> bool:
    """GRAIN_PL_NO_WANDB=1 (or true/yes/on): use CSV logging instead of W&B."""
    return os.environ.get(NO_WANDB_ENV, "").strip().lower() in _TRUE_STRINGS


class GrainWandbLogger(WandbLogger):
    """Lightning's WandbLogger with grain_pl's defaults: offline unless WANDB_MODE=online, project "grain_pl",
    save_dir "runs".

    Args:
        name: the W&B run's display name.
        save_dir: where W&B writes its run folders (`<save_dir>/wandb/...`); Lightning's checkpoints and
            grain_pl's sample grids go to `<save_dir>/<project>/<run id>/`.
        project: the W&B project.
        offline: None: from the environment (see `wandb_mode_from_env`); True/False: force offline/online.
        **kwargs: the other WandbLogger and `wandb.init` arguments. An explicit `mode=` wins over everything.

    The mode reaches `wandb.init(mode=...)` directly, which takes precedence over WANDB_MODE. Lightning's own
    `offline=True` would instead set WANDB_MODE=dryrun for the whole process when the run starts, so it is not
    used.
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str = DEFAULT_SAVE_DIR,
        project: str = DEFAULT_PROJECT,
        offline: bool | None = None,
        log_model: Literal["all"] | bool = False,
        **kwargs: Any,
    ) -> None:
        if "mode" in kwargs:
            mode = str(kwargs.pop("mode"))
        elif offline is None:
            mode = wandb_mode_from_env()
        else:
            mode = "offline" if offline else "online"
        super().__init__(name=name, save_dir=save_dir, project=project, log_model=log_model, mode=mode, **kwargs)
        if self._wandb_init.get("anonymous") is None:  # Lightning always passes it; wandb warns that it is unused
            self._wandb_init.pop("anonymous", None)

    @property
    def mode(self) -> str:
        """The mode the run is (or will be) started in: "offline", "online" or "disabled"."""
        return str(self._wandb_init["mode"])

    @property
    def is_offline(self) -> bool:
        return self.mode != "online"


class GrainLogger(GrainWandbLogger):
    """grain_pl's logger: a `GrainWandbLogger` (offline unless WANDB_MODE=online; same arguments), or, when
    GRAIN_PL_NO_WANDB=1, a plain `CSVLogger` at `<save_dir>/<name>/version_N` (name None:
    `<save_dir>/<project>/version_N`, where W&B would put the run's checkpoint and sample folders).

    The switch happens at construction (`__new__` returns the CSVLogger), so a LightningCLI YAML can name this
    class and the environment still decides; the W&B-only arguments are then ignored.
    """

    def __new__(
        cls,
        name: str | None = None,
        save_dir: str = DEFAULT_SAVE_DIR,
        project: str = DEFAULT_PROJECT,
        offline: bool | None = None,
        log_model: Literal["all"] | bool = False,
        **kwargs: Any,
    ) -> Logger:
        if wandb_disabled_by_env():
            return CSVLogger(save_dir=save_dir, name=name or project)
        return super().__new__(cls)


def make_logger(
    name: str = "grain",
    save_dir: str = DEFAULT_SAVE_DIR,
    use_wandb: bool | None = None,
    project: str = DEFAULT_PROJECT,
) -> Logger:
    """`GrainLogger(name, save_dir, project)`, or a CSVLogger at `<save_dir>/<name>/version_N` when `use_wandb`
    is False (GRAIN_PL_NO_WANDB=1 wins over use_wandb=True).

    For W&B `name` is the run's display name; for CSV it is the subfolder.
    """
    if use_wandb is False:
        return CSVLogger(save_dir=save_dir, name=name)
    return GrainLogger(name=name, save_dir=save_dir, project=project)
