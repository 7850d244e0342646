"""The stages with GrainConfig(encoder="bicubic"): an encoder without parameters trains nothing, the LR guidance is
off, and the checkpoints chain and load through every weight path (stage .ckpt, model file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from grain_pl.codec import GrainModule
from grain_pl.losses import LossWeights
from grain_pl.networks.encoder import BicubicEncoder
from grain_pl.stages import FinalStage, Stage1, Stage2
from grain_pl.training import InitFromStage
from grain_pl.weights.grain_checkpoint import load_grain
from grain_pl.weights.io import CheckpointError
from grain_pl.weights.stage_checkpoint import load_grain_from_stage_checkpoint

PRESET = "tiny-32-lr8"
UPSCALER = {"encoder": "bicubic"}
CONF = Path(__file__).resolve().parents[2] / "conf"


def weights() -> LossWeights:
    return LossWeights(identity=0.0, adversarial=0.0, lr=0.1)


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[key], value) for key, value in module.state_dict().items())


@pytest.fixture
def stage1_checkpoint(datamodule, trainer_kwargs, tmp_path):
    """An upscaler's stage 1 trained for 2 iterations: (the stage, its checkpoint)."""
    stage = Stage1(network=PRESET, network_overrides=UPSCALER, loss_weights=weights(), max_iterations=2)
    assert isinstance(stage.grain.encoder, BicubicEncoder)
    before = snapshot(stage.grain.decoder)
    trainer = pl.Trainer(max_epochs=-1, limit_val_batches=1, val_check_interval=2, **trainer_kwargs)
    trainer.fit(stage, datamodule=datamodule)
    assert stage.iteration == 2 and changed(before, stage.grain.decoder)
    trainer.save_checkpoint(tmp_path / "stage1.ckpt")
    return stage, tmp_path / "stage1.ckpt"


def test_stage1_trains_the_decoder_alone_without_lr_guidance(stage1_checkpoint):
    stage, path = stage1_checkpoint
    assert stage.loss_weights.lr == 0.0 and stage.hparams["loss_weights"]["lr"] == 0.0
    optimized = {id(p) for group in stage.configure_optimizers()[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in stage.grain.decoder.parameters()}
    logged = stage.trainer.logged_metrics
    assert "train/lr" not in logged and "val/lr" not in logged and "val/lr_psnr" in logged
    keys = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    assert not any(key.startswith("grain.encoder.") for key in keys)


def test_the_stage_checkpoint_loads_as_a_model(stage1_checkpoint, prior_file):
    stage, path = stage1_checkpoint
    with pytest.warns(UserWarning, match="Stage1 checkpoint"):
        grain, _ = load_grain_from_stage_checkpoint(path, prior_path=prior_file)
    assert isinstance(grain.encoder, BicubicEncoder)
    expected = stage.grain.decoder.state_dict()
    assert all(torch.equal(value, expected[key]) for key, value in grain.decoder.state_dict().items())
    with pytest.warns(UserWarning, match="Stage1 checkpoint"):
        assert GrainModule.from_checkpoint(path, prior_path=prior_file).is_upscaler


def test_the_chain_ends_in_a_model_file(stage1_checkpoint, prior_file, datamodule, trainer_kwargs, tmp_path):
    """Stage 1 -> the final stage (which trains everything but the fixed encoder) -> its export loads."""
    stage1, path = stage1_checkpoint
    final = FinalStage(network=PRESET, network_overrides=UPSCALER, prior_path=str(prior_file), loss_weights=weights(),
                       export_path=str(tmp_path / "upscaler.safetensors"), max_iterations=1)
    before = {part: snapshot(getattr(final.grain, part)) for part in ("latent_codes", "fusion")}
    pl.Trainer(max_epochs=-1, limit_val_batches=0, callbacks=[InitFromStage(str(path))], **trainer_kwargs).fit(
        final, datamodule=datamodule)
    assert final.iteration == 1 and final.loss_weights.lr == 0.0
    assert all(changed(state, getattr(final.grain, part)) for part, state in before.items())
    model = load_grain(tmp_path / "upscaler.safetensors")
    assert isinstance(model.encoder, BicubicEncoder) and model.config.encoder == "bicubic"
    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(hr).hr_out, final.grain.eval()(hr).hr_out)


def test_a_learned_encoders_checkpoint_does_not_fit_the_upscaler(prior_file, tmp_path):
    learned = Stage1(network=PRESET, loss_weights=weights())
    torch.save({"state_dict": learned.state_dict()}, tmp_path / "learned.ckpt")
    stage2 = Stage2(network=PRESET, network_overrides=UPSCALER, prior_path=str(prior_file), loss_weights=weights())
    with pytest.raises(CheckpointError, match=r"learned\.ckpt: does not fit grain\.encoder of Stage2.*unexpected"):
        stage2.load_parts(tmp_path / "learned.ckpt", ("encoder", "decoder"))


def test_the_overlay_makes_any_stage_an_upscaler(tmp_path, monkeypatch):
    from grain_pl.commands import lightning_cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    args = ["--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "stages" / "stage1.yaml"),
            "--config", str(CONF / "data" / "celebahq_1024.yaml"), "--config", str(CONF / "overlays" / "tiny.yaml"),
            "--config", str(CONF / "overlays" / "upscaler.yaml")]
    cli = lightning_cli(args, run=False)
    assert cli.model.config.encoder == "bicubic" and cli.model.config.hr_size == 32
    assert isinstance(cli.model.grain.encoder, BicubicEncoder)
    assert cli.model.loss_weights.lr == 0.0  # stage1.yaml's 0.1: off, there is no encoder to guide
