"""The LR through a differentiable JPEG in training steps (`GrainStage(lr_jpeg=...)`, issue 12): off, every stage
runs today's data flow; on, the decoder of every stage gets kornia's JPEG of the quantized LR in training steps
(the stored LR stays the quantized one), gradients reach the encoder through it, and validation is lossless; the
overlay sets it, and bad settings are one line naming the setting."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from kornia.enhance import jpeg_codec_differentiable

from grain_pl.commands import lightning_cli, main
from grain_pl.losses import LossWeights
from grain_pl.stages import FinalStage, Stage1, Stage2, Stage3
from grain_pl.training import lr_jpeg as lr_jpeg_module
from grain_pl.training.lr_jpeg import LRJpeg, jpeg_lr

PRESET = "tiny-32-lr8"
STAGES = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3, "final": FinalStage}
CONF = Path(__file__).resolve().parents[2] / "conf"
FIXED = LRJpeg(quality_min=75, quality_max=75, probability=1.0)  # every sample, one quality: no random draw decides


def make_stage(name: str, prior_file, lr_weight: float | None = None, seed: int = 0, adversarial: float = 0.0,
               **kwargs):
    torch.manual_seed(seed)
    lr_weight = STAGES[name].default_lr_weight if lr_weight is None else lr_weight
    weights = LossWeights(identity=0.0, lpips=0.0, adversarial=adversarial, lr=lr_weight)
    prior = None if name == "stage1" else str(prior_file)
    return STAGES[name](network=PRESET, prior_path=prior, loss_weights=weights, metrics_lpips=False, **kwargs)


def hr_batch(count: int = 3) -> torch.Tensor:
    return torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


def kornia_jpeg(lr: torch.Tensor, quality: float) -> torch.Tensor:
    return jpeg_codec_differentiable((lr + 1) / 2, torch.full((lr.shape[0],), quality)) * 2 - 1


class DecoderInputs:
    """The LRs the stage's decoder is handed: stage 1 and final run the decoder module; stages 2 and 3 hand
    theirs to `frozen_decoder` (which may take the inference path)."""

    def __init__(self, stage, monkeypatch) -> None:
        self.seen: list[torch.Tensor] = []
        if isinstance(stage, Stage2 | Stage3):
            original = stage.frozen_decoder
            monkeypatch.setattr(stage, "frozen_decoder", lambda lr: (self.seen.append(lr), original(lr))[1])
        else:
            stage.grain.decoder.register_forward_pre_hook(lambda module, args: self.seen.append(args[0]))


# ----- the option itself -----
@pytest.mark.parametrize("settings, setting", [
    (dict(quality_min=0), "lr_jpeg.quality_min"), (dict(quality_max=101), "lr_jpeg.quality_max"),
    (dict(quality_min=80.5), "lr_jpeg.quality_min"), (dict(quality_min=90, quality_max=60), "lr_jpeg.quality_min"),
    (dict(probability=0.0), "lr_jpeg.probability"), (dict(probability=1.5), "lr_jpeg.probability"),
    (dict(probability=float("nan")), "lr_jpeg.probability")])
def test_bad_settings_are_one_line_naming_the_setting(settings, setting):
    with pytest.raises(ValueError) as error:
        LRJpeg(**settings)
    message = str(error.value)
    assert message.startswith(setting) and "\n" not in message
    if "quality_max" in settings and "quality_min" in settings:
        assert "empty" in message


def test_jpeg_lr_is_kornias_jpeg_of_the_lr_in_minus_one_to_one():
    lr = torch.rand(4, 3, 8, 8) * 2 - 1
    coded = jpeg_lr(lr, FIXED)
    torch.testing.assert_close(coded, kornia_jpeg(lr, 75.0), rtol=0, atol=0)
    assert (coded - lr).abs().max() > 0.05  # a real change at quality 75, not a round-off
    for size in (8, 16, 12):  # the demo's LR, the paper's, and one that is no multiple of 8: kornia pads and crops
        assert jpeg_lr(torch.zeros(2, 3, size, size), FIXED).shape == (2, 3, size, size)
    channels_last = lr.contiguous(memory_format=torch.channels_last)  # the demo's memory format
    torch.testing.assert_close(jpeg_lr(channels_last, FIXED), coded, rtol=0, atol=0)


def test_qualities_are_drawn_per_sample_and_some_samples_stay_lossless(monkeypatch):
    drawn = []

    def spy(image, qualities):
        drawn.append(qualities)
        return jpeg_codec_differentiable(image, qualities)

    monkeypatch.setattr(lr_jpeg_module, "jpeg_codec_differentiable", spy)
    lr = torch.rand(400, 3, 8, 8) * 2 - 1
    coded = jpeg_lr(lr, LRJpeg(quality_min=50, quality_max=95, probability=0.75))
    (qualities,) = drawn
    assert qualities.shape == (400,) and torch.equal(qualities, qualities.round())
    assert qualities.min() >= 50 and qualities.max() <= 95 and len(qualities.unique()) > 30
    lossless = (coded == lr).flatten(1).all(dim=1)
    assert 0.15 < lossless.float().mean() < 0.35  # 1 - probability, per sample


def test_straight_through_keeps_the_jpegs_value_with_the_lossless_gradient():
    lr = (torch.rand(2, 3, 8, 8) * 2 - 1).requires_grad_()
    straight = LRJpeg(quality_min=75, quality_max=75, probability=1.0, straight_through=True)
    coded = jpeg_lr(lr, straight)
    torch.testing.assert_close(coded, kornia_jpeg(lr.detach(), 75.0), rtol=0, atol=1e-6)
    coded.sum().backward()
    assert torch.equal(lr.grad, torch.ones_like(lr))
    lr.grad = None
    jpeg_lr(lr, FIXED).sum().backward()  # kornia's own gradient: its polynomial rounding weakens it
    assert not torch.allclose(lr.grad, torch.ones_like(lr)) and lr.grad.abs().sum() > 0


# ----- the stages -----
@pytest.mark.parametrize("name", list(STAGES))
def test_off_the_decoder_gets_the_quantized_lr_itself(name, prior_file, monkeypatch):
    monkeypatch.setattr("grain_pl.stages.base.jpeg_lr", lambda *args: pytest.fail("JPEG while lr_jpeg is off"))
    stage = make_stage(name, prior_file).train()
    inputs = DecoderInputs(stage, monkeypatch)
    out = stage.generate(hr_batch())
    assert len(inputs.seen) == 1 and inputs.seen[0] is out.lr
    assert stage.hparams["lr_jpeg"] is None


@pytest.mark.parametrize("name", ["stage1", "final"])
def test_off_a_training_step_is_todays_bit_for_bit(name, prior_file):
    """Stage 1's and the final stage's data flow were `grain.rescale(hr)` and `grain(hr)` (noisy quantizer: the
    same global random draws on both sides)."""
    stage = make_stage(name, prior_file).train()
    hr = hr_batch()
    torch.manual_seed(5)
    out = stage.generate(hr)
    torch.manual_seed(5)
    expected = stage.grain.rescale(hr) if name == "stage1" else stage.grain(hr)
    for field in ("lr", "y_inv", "hr_out"):
        if getattr(expected, field) is not None:
            assert torch.equal(getattr(out, field), getattr(expected, field)), field


@pytest.mark.parametrize("name", list(STAGES))
def test_on_the_decoder_gets_kornias_jpeg_of_the_quantized_lr_in_training_only(name, prior_file, monkeypatch):
    stage = make_stage(name, prior_file, lr_jpeg=FIXED).train()
    inputs = DecoderInputs(stage, monkeypatch)
    out = stage.generate(hr_batch())
    (seen,) = inputs.seen
    assert not torch.equal(seen, out.lr)  # the stored LR is the quantized one; the decoder got its JPEG
    torch.testing.assert_close(seen, kornia_jpeg(out.lr.detach(), 75.0), rtol=0, atol=1e-6)
    assert stage.hparams["lr_jpeg"] == {"quality_min": 75, "quality_max": 75, "probability": 1.0,
                                        "straight_through": False}

    stage.eval()  # what validation (and the sample grids of validation) run
    out = stage.generate(hr_batch())
    assert inputs.seen[-1] is out.lr


@pytest.mark.parametrize("name", ["stage1", "final"])
def test_gradients_reach_the_encoder_through_the_jpeg(name, prior_file):
    """With no LR-guidance loss, the encoder's only gradient comes through the decoder, so through the JPEG;
    it differs from the lossless path's."""
    grads = {}
    for lr_jpeg in (None, FIXED):
        stage = make_stage(name, prior_file, lr_weight=0.0, lr_jpeg=lr_jpeg).train()
        stage.grain.quantize.eval()  # the same LR on both sides
        hr = hr_batch()
        total, _ = stage.generator_losses(stage.generate(hr), hr)
        total.backward()
        grads[lr_jpeg] = torch.cat([p.grad.flatten() for p in stage.grain.encoder.parameters()])
    assert grads[FIXED].abs().sum() > 0 and grads[FIXED].isfinite().all()
    assert not torch.allclose(grads[FIXED], grads[None])


@pytest.mark.parametrize("name", ["stage1", "stage3"])
def test_validation_is_lossless(name, prior_file, datamodule, trainer_kwargs):
    logged = {}
    for lr_jpeg in (None, FIXED):
        stage = make_stage(name, prior_file, seed=7, lr_jpeg=lr_jpeg)
        trainer = pl.Trainer(**trainer_kwargs)
        (logged[lr_jpeg],) = trainer.validate(stage, datamodule=datamodule, verbose=False)
    assert "val/psnr" in logged[None]
    assert logged[FIXED] == logged[None]  # the same code path: bit for bit


@pytest.mark.parametrize("name", list(STAGES))
def test_every_stage_fits_with_it(name, prior_file, datamodule, trainer_kwargs):
    """A real training iteration (discriminator step included) with the default settings."""
    stage = make_stage(name, prior_file, adversarial=0.01, lr_jpeg=LRJpeg())
    pl.Trainer(fast_dev_run=True, **trainer_kwargs).fit(stage, datamodule=datamodule)
    assert stage.iteration == 1


# ----- the overlay and `grain fit` -----
@pytest.mark.parametrize("name", list(STAGES))
def test_the_overlay_sets_the_option(name, prior_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    prior = "null" if name == "stage1" else str(prior_file)
    args = ["--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "stages" / f"{name}.yaml"),
            "--config", str(CONF / "overlays" / "tiny.yaml"), "--config", str(CONF / "overlays" / "jpeg_robust.yaml"),
            "--model.init_args.prior_path", prior, "--trainer.logger", "false"]
    cli = lightning_cli(args, run=False)
    assert cli.model.lr_jpeg == LRJpeg(quality_min=50, quality_max=95, probability=0.75, straight_through=False)
    assert cli.model.hparams["lr_jpeg"]["quality_min"] == 50
    # one field changed on the command line, the others kept from the overlay
    cli = lightning_cli([*args, "--model.init_args.lr_jpeg.quality_max", "90"], run=False)
    assert cli.model.lr_jpeg == LRJpeg(quality_min=50, quality_max=90, probability=0.75)
    # without the overlay: off
    assert lightning_cli(args[:6] + args[8:], run=False).model.lr_jpeg is None


@pytest.mark.parametrize("extra, setting", [
    (["--model.init_args.lr_jpeg.quality_min", "0"], "lr_jpeg.quality_min"),
    (["--model.init_args.lr_jpeg.quality_max", "40"], "lr_jpeg.quality_min (50) is above lr_jpeg.quality_max (40)")])
def test_grain_fit_names_a_bad_setting_in_one_line(extra, setting, tmp_path, monkeypatch, isolated_wandb, image_dir,
                                                    capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "stages" / "stage1.yaml"),
            "--config", str(CONF / "overlays" / "tiny.yaml"), "--config", str(CONF / "overlays" / "jpeg_robust.yaml"),
            "--data.data_dir", str(image_dir), "--trainer.logger", "false", *extra]
    assert main(args) == 2
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith("grain fit: error:")]
    assert len(lines) == 1 and setting in lines[0] and "Traceback" not in error, error
    assert not (tmp_path / "runs").exists()
