"""GrainLogger / make_logger / GrainWandbLogger: offline W&B by default, CSV under GRAIN_PL_NO_WANDB=1 (also from a
LightningCLI YAML), online only when asked (never exercised)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pytorch_lightning.loggers import CSVLogger

from grain_pl.training.loggers import GrainLogger, GrainWandbLogger, make_logger

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


def test_grain_logger_is_wandb_unless_switched_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    logger = GrainLogger(name="unit", save_dir=str(tmp_path), offline=False, tags=["a"])
    assert isinstance(logger, GrainWandbLogger) and logger.mode == "online"
    assert logger.name == "grain_pl" and logger.save_dir == str(tmp_path)

    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "yes")
    logger = GrainLogger(name="unit", save_dir=str(tmp_path), offline=False, tags=["a"])  # W&B arguments ignored
    assert type(logger) is CSVLogger and Path(logger.log_dir) == tmp_path / "unit" / "version_0"
    # no name: the project's folder, where W&B puts its checkpoint and sample folders
    assert Path(GrainLogger(save_dir=str(tmp_path)).log_dir) == tmp_path / "grain_pl" / "version_0"
    import wandb

    assert wandb.run is None and not (tmp_path / "wandb").exists()


def instantiate_logger(class_path: str, tmp_path: Path):
    from jsonargparse import ArgumentParser
    from pytorch_lightning.loggers import Logger

    parser = ArgumentParser()
    parser.add_argument("--logger", type=Logger)
    config = parser.parse_args([
        f"--logger.class_path={class_path}",
        "--logger.init_args.name=from_yaml",
        f"--logger.init_args.save_dir={tmp_path}",
        "--logger.init_args.offline=true",
    ])
    # jsonargparse >= 4.49 renamed instantiate_classes to instantiate
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(config).logger


def test_lightning_cli_yaml_can_name_it(tmp_path: Path) -> None:
    logger = instantiate_logger("grain_pl.training.loggers.GrainWandbLogger", tmp_path)
    assert isinstance(logger, GrainWandbLogger)
    assert logger.mode == "offline" and logger.name == "grain_pl" and logger.save_dir == str(tmp_path)


def test_lightning_cli_yaml_grain_logger_follows_the_switch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    logger = instantiate_logger("grain_pl.training.GrainLogger", tmp_path)
    assert isinstance(logger, GrainWandbLogger) and logger.mode == "offline"
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    logger = instantiate_logger("grain_pl.training.GrainLogger", tmp_path)
    assert type(logger) is CSVLogger and Path(logger.log_dir) == tmp_path / "from_yaml" / "version_0"
