"""Every file in conf/ is valid: class paths import, keys are real arguments, and each stage config
instantiates (with the tiny overlay, since the paper presets need weight files that tests cannot have), with
its sample grids and a logger that GRAIN_PL_NO_WANDB turns into CSV files."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning.loggers import CSVLogger

from grain_pl.commands import lightning_cli
from grain_pl.training import GrainWandbLogger, LogImageGrid
from grain_pl.training.image_logger import image_grid

CONF = Path(__file__).resolve().parents[1] / "conf"
STAGE_FILES = ["prior", "stage1", "stage2", "stage3", "final"]


def import_path(path: str):
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def class_paths(node):
    if isinstance(node, dict):
        if "class_path" in node:
            yield node["class_path"], node.get("init_args", {}) or {}
        for value in node.values():
            yield from class_paths(value)
    elif isinstance(node, list):
        for value in node:
            yield from class_paths(value)


@pytest.mark.parametrize("path", sorted(CONF.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONF)))
def test_class_paths_and_arguments_exist(path):
    config = yaml.safe_load(path.read_text())
    for class_path, init_args in class_paths(config):
        parameters = inspect.signature(import_path(class_path)).parameters
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        unknown = set(init_args) - set(parameters)
        assert accepts_any or not unknown, f"{path.name}: {class_path} has no argument(s) {unknown}"
    if "data" in config:
        from grain_pl.data import GrainDataModule

        unknown = set(config["data"]) - set(inspect.signature(GrainDataModule).parameters)
        assert not unknown, f"{path.name}: GrainDataModule has no argument(s) {unknown}"


@pytest.mark.parametrize("stage", STAGE_FILES)
def test_stage_configs_instantiate(stage, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    prior = tmp_path / "prior.pt"
    _tiny_prior(prior)
    args = ["--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "stages" / f"{stage}.yaml"), "--config",
            str(CONF / "data" / "celebahq_1024.yaml")]
    if stage == "prior":
        args += ["--model.init_args.size", "32", "--model.init_args.style_dim", "32", "--model.init_args.n_mlp", "2",
                 "--model.init_args.channel_max", "16"]
    else:
        args += ["--config", str(CONF / "overlays" / "tiny.yaml"), "--model.init_args.prior_path", str(prior)]
    cli = lightning_cli(args, run=False)
    assert type(cli.model).__name__ == {"prior": "PriorStage", "stage1": "Stage1", "stage2": "Stage2",
                                         "stage3": "Stage3", "final": "FinalStage"}[stage]
    assert cli.datamodule.image_size == (32 if stage != "prior" else 1024)
    if stage != "prior":
        assert cli.model.loss_weights.identity == 0.0
        assert cli.model.loss_weights.pixel == 1.0 and cli.model.loss_weights.lpips == 0.8

    # Every stage draws sample grids, the prior included: its sample_images(batch) fits LogImageGrid.
    (grids,) = [callback for callback in cli.trainer.callbacks if isinstance(callback, LogImageGrid)]
    grids.setup(cli.trainer, cli.model, "fit")
    if stage == "prior":
        batch = {"hr": torch.zeros(3, 3, 32, 32)}
        assert image_grid(cli.model.sample_images(batch), grids.max_images).shape == (3, 3 * 34 + 2, 2 * 34 + 2)

    # GRAIN_PL_NO_WANDB=1: the stage's logger writes CSV files, no W&B.
    assert type(cli.trainer.logger) is CSVLogger
    assert Path(cli.trainer.logger.log_dir) == Path("runs", stage, stage, "version_0")
    assert not (tmp_path / "runs" / stage / "wandb").exists()


@pytest.mark.parametrize("no_wandb", ["", "1"])
def test_the_shared_trainer_logger_follows_grain_pl_no_wandb(no_wandb, tmp_path, monkeypatch, isolated_wandb):
    """conf/trainer.yaml's logger on its own (no stage file overrides it): offline W&B, or CSV under the switch."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", no_wandb)
    cli = lightning_cli(["--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "data" / "cat_256.yaml"),
                         "--model", "grain_pl.stages.Stage1", "--model.init_args.network", "tiny-32-lr8",
                         "--model.init_args.loss_weights.identity", "0"], run=False)
    logger = cli.trainer.logger
    if no_wandb:
        assert type(logger) is CSVLogger and Path(logger.log_dir) == Path("runs", "grain_pl", "version_0")
    else:
        assert isinstance(logger, GrainWandbLogger) and logger.is_offline and logger.save_dir == "runs"


def _tiny_prior(path: Path) -> None:
    import torch

    from grain_pl.networks import get_preset
    from grain_pl.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
    from grain_pl.weights.stylegan2_rosinality import export_rosinality

    config = get_preset("tiny-32-lr8")
    generator = StyleGAN2Generator(32, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                   channel_max=config.generator_channel_max)
    discriminator = StyleGAN2Discriminator(32, channel_max=config.generator_channel_max)
    export_rosinality(generator, discriminator, torch.zeros(config.style_dim), path)


def test_overlays_merge_loss_weights_field_by_field(tmp_path, monkeypatch):
    """conf/overlays/cat_256.yaml sets only identity: the stage's lr weight (0.1 in stage 1) must survive."""
    monkeypatch.chdir(tmp_path)
    args = ["--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "stages" / "stage1.yaml"), "--config",
            str(CONF / "data" / "cat_256.yaml"), "--config", str(CONF / "overlays" / "cat_256.yaml"),
            "--model.init_args.prior_path", "null", "--model.init_args.network", "tiny-32-lr8",
            "--data.image_size", "32", "--trainer.logger", "false"]
    cli = lightning_cli(args, run=False)
    weights = cli.model.loss_weights
    assert (weights.identity, weights.lr, weights.lpips) == (0.0, 0.1, 0.8)
