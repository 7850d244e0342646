"""make_logger / GrainWandbLogger: offline W&B by default, CSV fallback, online only when asked (never exercised)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger

from grain_pl.training.loggers import GrainWandbLogger, make_logger

pytestmark = pytest.mark.usefixtures("isolated_wandb")


def test_offline_by_default_and_the_run_is_written_locally(tmp_path: Path) -> None:
    logger = make_logger("unit", save_dir=str(tmp_path / "runs"))
    assert isinstance(logger, GrainWandbLogger)
    assert logger.mode == "offline" and logger.is_offline
    assert logger.name == "grain_pl" and logger.save_dir == str(tmp_path / "runs")

    run = logger.experiment  # starts W&B, offline: nothing leaves the machine
    assert run.settings.mode == "offline" and run.offline
    assert run.name == "unit" and run.project == "grain_pl"
    logger.log_metrics({"loss": 1.0}, step=1)
    run.finish()
    assert len(list((tmp_path / "runs" / "wandb").glob("offline-run-*"))) == 1


def test_online_only_through_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The experiment is never created here: only the mode that wandb.init would get is checked.
    for mode in ("offline", "dryrun", "nonsense", ""):
        monkeypatch.setenv("WANDB_MODE", mode)
        assert GrainWandbLogger(save_dir=str(tmp_path)).mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "online")
    assert GrainWandbLogger(save_dir=str(tmp_path)).mode == "online"
    assert make_logger(save_dir=str(tmp_path)).mode == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert GrainWandbLogger(save_dir=str(tmp_path)).mode == "disabled"


def test_explicit_arguments_win_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WANDB_MODE", "online")
    assert GrainWandbLogger(save_dir=str(tmp_path), offline=True).mode == "offline"
    monkeypatch.delenv("WANDB_MODE")
    assert GrainWandbLogger(save_dir=str(tmp_path), offline=False).mode == "online"
    assert GrainWandbLogger(save_dir=str(tmp_path), mode="disabled").mode == "disabled"


def test_defaults_of_the_cli_logger() -> None:
    logger = GrainWandbLogger()
    assert logger.name == "grain_pl" and logger.save_dir == "runs" and logger.mode == "offline"


def test_csv_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    logger = make_logger("unit", save_dir=str(tmp_path), use_wandb=False)
    assert isinstance(logger, CSVLogger)
    assert Path(logger.log_dir) == tmp_path / "unit" / "version_0"

    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    assert isinstance(make_logger(save_dir=str(tmp_path)), CSVLogger)
    assert isinstance(make_logger(save_dir=str(tmp_path), use_wandb=True), CSVLogger)  # the switch wins
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "0")
    assert isinstance(make_logger(save_dir=str(tmp_path)), GrainWandbLogger)


def test_lightning_cli_yaml_can_name_it(tmp_path: Path) -> None:
    from jsonargparse import ArgumentParser
    from pytorch_lightning.loggers import Logger

    parser = ArgumentParser()
    parser.add_argument("--logger", type=Logger)
    config = parser.parse_args([
        "--logger.class_path=grain_pl.training.loggers.GrainWandbLogger",
        "--logger.init_args.name=from_yaml",
        f"--logger.init_args.save_dir={tmp_path}",
    ])
    # jsonargparse >= 4.49 renamed instantiate_classes to instantiate
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    logger = instantiate(config).logger
    assert isinstance(logger, GrainWandbLogger)
    assert logger.mode == "offline" and logger.name == "grain_pl" and logger.save_dir == str(tmp_path)
