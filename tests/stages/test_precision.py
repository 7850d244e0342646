"""The memory switches of the GAN stages: mixed precision under manual optimization and activation checkpointing.

- bf16-mixed runs on the CPU (autocast to bfloat16; no scaler).
- 16-mixed: Lightning turns `Trainer(accelerator="cpu", precision="16-mixed")` into bf16-mixed, but its
  `MixedPrecision("16-mixed", "cpu")` plugin runs fp16 autocast with a CPU GradScaler, which is enough to check
  that every manual backward is scaled and every optimizer step (G, D, R1) goes through the scaler, and that the
  scaler state lands in the checkpoint. The CUDA variant needs a GPU.
- Activation checkpointing recomputes activations in the backward pass: same update as without.
"""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.precision import MixedPrecision

import grain_pl.networks.checkpointing as checkpointing_module
from grain_pl.losses import LossWeights
from grain_pl.networks.training_memory import MemoryOptions
from grain_pl.stages import FinalStage, Stage1

PRESET = "tiny-32-lr8"
# one iteration with all three steps: D, R1, G (3 optimizer steps, 3 backward passes)
SCHEDULE = dict(d_every=1, r1_every=1, r1_gamma=10.0, max_iterations=1)
OPTIMIZER_STEPS = 3


class CountingGradScaler(torch.amp.GradScaler):
    """A GradScaler that counts the losses it scales and the optimizer steps it takes."""

    def __init__(self, device: str, init_scale: float) -> None:
        super().__init__(device, init_scale=init_scale)
        self.scaled_losses = 0
        self.optimizer_steps = 0

    def scale(self, outputs):
        self.scaled_losses += 1
        return super().scale(outputs)

    def step(self, optimizer, *args, **kwargs):
        self.optimizer_steps += 1
        return super().step(optimizer, *args, **kwargs)


def make_stage1(**kwargs) -> Stage1:
    # no LPIPS: half-precision AlexNet is slow on the CPU and not what is tested here
    weights = LossWeights(identity=0.0, lpips=0.0, lr=0.1)
    return Stage1(network=PRESET, loss_weights=weights, metrics_lpips=False, **SCHEDULE, **kwargs)


def fit_kwargs(trainer_kwargs: dict) -> dict:
    return {**trainer_kwargs, "limit_val_batches": 0}


def logged_values(trainer: pl.Trainer) -> dict[str, float]:
    return {name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("train/")}


def record_discriminator_dtypes(stage: Stage1) -> list[torch.dtype]:
    dtypes: list[torch.dtype] = []
    stage.discriminator.register_forward_hook(lambda module, inputs, output: dtypes.append(output.dtype))
    return dtypes


def forward_dtypes(half: torch.dtype) -> list[torch.dtype]:
    """D's output dtypes over one iteration with D and R1 steps: D(real), D(fake), then the R1 pass in fp32
    (`discriminator_r1` switches autocast off), then the generator step's RaGAN D(fake), D(real)."""
    return [half, half, torch.float32, half, half]


def assert_trained_and_finite(stage: Stage1, before: dict[str, torch.Tensor], trainer: pl.Trainer) -> None:
    values = logged_values(trainer)
    assert {"train/total", "train/d_loss", "train/r1", "train/adversarial"} <= values.keys()
    assert all(math.isfinite(value) for value in values.values()), values
    assert stage.iteration == 1 and stage.discriminator_steps == 1
    parameters = dict(stage.named_parameters())
    assert all(torch.isfinite(parameters[name]).all() for name in before)
    for prefix in ("grain.encoder.", "grain.decoder.", "discriminator."):
        assert any(not torch.equal(value, parameters[name]) for name, value in before.items()
                   if name.startswith(prefix)), prefix


def trainable_snapshot(stage: pl.LightningModule) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in stage.named_parameters() if value.requires_grad}


def test_bf16_mixed_fit_on_cpu_has_finite_losses(datamodule, trainer_kwargs):
    stage = make_stage1()
    before = trainable_snapshot(stage)
    dtypes = record_discriminator_dtypes(stage)
    trainer = pl.Trainer(precision="bf16-mixed", **fit_kwargs(trainer_kwargs))
    trainer.fit(stage, datamodule=datamodule)
    assert trainer.precision_plugin.scaler is None  # bf16 needs no loss scaling
    assert dtypes == forward_dtypes(torch.bfloat16)  # autocast was on, except for the R1 pass
    assert_trained_and_finite(stage, before, trainer)


def test_16_mixed_scales_every_manual_backward_and_saves_the_scaler(datamodule, trainer_kwargs, tmp_path):
    stage = make_stage1()
    before = trainable_snapshot(stage)
    dtypes = record_discriminator_dtypes(stage)
    # A small initial scale, so that no step of this one iteration overflows and is skipped (from the default
    # 2**16 the scaler backs off over the first steps on this tiny model).
    scaler = CountingGradScaler("cpu", init_scale=4.0)
    trainer = pl.Trainer(plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)], **fit_kwargs(trainer_kwargs))
    trainer.fit(stage, datamodule=datamodule)
    assert trainer.precision == "16-mixed" and trainer.precision_plugin.scaler is scaler
    assert dtypes == forward_dtypes(torch.float16)
    # manual_backward -> scaler.scale; optimizer.step -> scaler.step + update, for G, D and R1 alike
    assert trainer.global_step == OPTIMIZER_STEPS
    assert scaler.scaled_losses == scaler.optimizer_steps == OPTIMIZER_STEPS
    assert scaler.get_scale() == 4.0  # no overflow, no skipped step
    assert_trained_and_finite(stage, before, trainer)

    trainer.save_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["MixedPrecision"] == scaler.state_dict()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed with Lightning's default scaler needs CUDA")
def test_16_mixed_on_cuda_keeps_the_scaler_in_the_checkpoint(datamodule, tmp_path):
    stage = make_stage1()
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision="16-mixed", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         default_root_dir=str(tmp_path))
    trainer.fit(stage, datamodule=datamodule)
    scaler = trainer.precision_plugin.scaler
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert trainer.global_step == OPTIMIZER_STEPS
    values = logged_values(trainer)
    assert all(math.isfinite(value) for value in values.values()), values
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    checkpoint = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["MixedPrecision"]["scale"] == scaler.get_scale()


def test_activation_checkpointing_gives_the_same_update(prior_file, datamodule, trainer_kwargs, monkeypatch):
    """One iteration of the final stage (encoder, decoder and fusion all checkpoint) with a D and an R1 step."""
    calls = {"checkpoint": 0}
    original_checkpoint = checkpointing_module.checkpoint

    def counting_checkpoint(*args, **kwargs):
        calls["checkpoint"] += 1
        return original_checkpoint(*args, **kwargs)

    monkeypatch.setattr(checkpointing_module, "checkpoint", counting_checkpoint)

    def train_once(checkpointing: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
        calls["checkpoint"] = 0
        torch.manual_seed(0)
        weights = LossWeights(identity=0.0, lpips=0.0, lr=0.1)
        stage = FinalStage(network=PRESET, prior_path=str(prior_file), loss_weights=weights, d_every=1, r1_every=1,
                           max_iterations=1, metrics_lpips=False, checkpointing=checkpointing,
                           memory=MemoryOptions.baseline())  # the checkpointing switch alone, no memory levers
        before = trainable_snapshot(stage)
        torch.manual_seed(1)  # the same quantization noise and data order in both runs
        pl.Trainer(**fit_kwargs(trainer_kwargs)).fit(stage, datamodule=datamodule)
        return before, trainable_snapshot(stage), calls["checkpoint"]

    before_plain, after_plain, plain_calls = train_once(checkpointing=False)
    before_checkpointed, after_checkpointed, checkpointed_calls = train_once(checkpointing=True)
    assert plain_calls == 0 and checkpointed_calls > 0
    assert after_plain.keys() == after_checkpointed.keys()
    for name in before_plain:
        torch.testing.assert_close(before_checkpointed[name], before_plain[name], rtol=0, atol=0)
    for name in after_plain:
        torch.testing.assert_close(after_checkpointed[name], after_plain[name], msg=name)  # bitwise equal here
    assert any(not torch.equal(before_plain[name], after_plain[name]) for name in after_plain
               if name.startswith("grain.fusion."))
