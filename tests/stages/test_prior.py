"""PriorStage: a tiny StyleGAN2 trains on random images, regularizes, keeps an EMA, resumes and exports."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from grain_pl.stages.prior import PriorStage, ema_decay, lazy_regularization_ratio
from grain_pl.weights.stylegan2_rosinality import load_stylegan2_prior

SIZE = 32
TINY = dict(size=SIZE, style_dim=32, n_mlp=2, channel_max=16)


class RandomImages(Dataset):
    """`count` fixed random images in [-1, 1], as {"hr": (3, SIZE, SIZE)}."""

    def __init__(self, count: int):
        self.images = torch.rand(count, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(7)) * 2 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"hr": self.images[index]}


def loader(batches: int, batch_size: int = 2) -> DataLoader:
    return DataLoader(RandomImages(batches * batch_size), batch_size=batch_size, shuffle=False)


def trainer(tmp_path: Path, **kwargs) -> pl.Trainer:
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                    num_sanity_val_steps=0)
    settings.update(kwargs)
    return pl.Trainer(**settings)


class CountingPriorStage(PriorStage):
    """Counts R1 steps and keeps every step's logged losses."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.r1_iterations: list[int] = []
        self.logged: list[dict[str, float]] = []

    def _r1_step(self, real, optimizer):
        self.r1_iterations.append(self.iteration)
        return super()._r1_step(real, optimizer)

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.logged.append({key: float(value) for key, value in self.trainer.callback_metrics.items()})
        super().on_train_batch_end(outputs, batch, batch_idx)


def adam_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


def flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([param.detach().reshape(-1) for param in module.parameters()])


def test_rosinality_constants():
    # rosinality: accum = 0.5 ** (32 / (10 * 1000)) per step at batch 32.
    assert ema_decay(32, 10_000) == pytest.approx(0.5 ** (32 / (10 * 1000)))
    assert lazy_regularization_ratio(16) == pytest.approx(16 / 17)
    assert lazy_regularization_ratio(0) == 1.0
    stage = PriorStage(**TINY, r1_every=16, path_length_every=4)
    generator_optimizer, discriminator_optimizer = stage.configure_optimizers()
    assert discriminator_optimizer.param_groups[0]["lr"] == pytest.approx(0.002 * 16 / 17)
    assert discriminator_optimizer.param_groups[0]["betas"] == pytest.approx((0.0, 0.99 ** (16 / 17)))
    assert generator_optimizer.param_groups[0]["lr"] == pytest.approx(0.002 * 4 / 5)
    assert not any(param.requires_grad for param in stage.generator_ema.parameters())


def test_fit_trains_regularizes_and_exports(tmp_path):
    export_path = tmp_path / "prior" / "stylegan2-tiny.pt"
    stage = CountingPriorStage(**TINY, r1_every=2, path_length_every=3, ema_half_life_images=8.0,
                               max_iterations=6, export_path=str(export_path), sample_every_n_steps=3,
                               num_samples=4)
    generator_before = flat(stage.generator)
    discriminator_before = flat(stage.discriminator)
    # 4 batches an epoch, 3 epochs allowed: max_iterations stops it at 6.
    fit = trainer(tmp_path, max_epochs=3)
    fit.fit(stage, train_dataloaders=loader(4))

    assert stage.iteration == 6
    assert stage.r1_iterations == [0, 2, 4]
    generator_optimizer, discriminator_optimizer = fit.optimizers
    # D: one loss step per iteration plus the R1 steps; G: one per iteration plus path-length at 0 and 3.
    assert adam_steps(discriminator_optimizer) == 6 + 3
    assert adam_steps(generator_optimizer) == 6 + 2
    assert fit.global_step == 9 + 8  # Lightning counts optimizer steps, hence the own counter

    assert len(stage.logged) == 6
    for metrics in stage.logged:
        for key in ("train/d_loss", "train/g_loss", "train/real_score", "train/fake_score", "train/r1"):
            assert math.isfinite(metrics[key]), (key, metrics)
    assert stage.mean_path_length > 0

    generator_after = flat(stage.generator)
    assert not torch.equal(generator_after, generator_before)
    assert not torch.equal(flat(stage.discriminator), discriminator_before)
    # The EMA lags the generator but has moved from the start towards it.
    ema = flat(stage.generator_ema)
    assert not torch.equal(ema, generator_after)
    assert not torch.equal(ema, generator_before)
    assert (ema - generator_after).norm() < (generator_before - generator_after).norm()
    assert not stage.generator_ema.training

    # Fixed-z sample grids, no logger: PNGs under log_dir/samples.
    assert sorted(path.name for path in (tmp_path / "samples").iterdir()) == ["step_000003.png",
                                                                              "step_000006.png"]

    # The exported file is a rosinality prior that loads into the same EMA generator.
    generator, discriminator, latent_avg = load_stylegan2_prior(export_path)
    assert (generator.size, generator.style_dim, generator.n_mlp, generator.channel_max) == (SIZE, 32, 2, 16)
    for key, value in stage.generator_ema.state_dict().items():
        torch.testing.assert_close(generator.state_dict()[key], value, rtol=0, atol=0, msg=key)
    for key, value in stage.discriminator.state_dict().items():
        torch.testing.assert_close(discriminator.state_dict()[key], value, rtol=0, atol=0, msg=key)
    w = latent_avg.reshape(1, 1, -1).repeat(1, generator.num_ws, 1)
    torch.testing.assert_close(generator.synthesize(w, noise_mode="const").image,
                               stage.generator_ema.synthesize(w, noise_mode="const").image)
    raw = torch.load(export_path, weights_only=False)
    assert set(raw) == {"g_ema", "latent_avg", "d", "g", "args"}
    assert raw["args"].n_mlp == 2 and raw["args"].iter == 6


def test_existing_export_fails_before_any_step(tmp_path):
    export_path = tmp_path / "prior.pt"
    export_path.write_bytes(b"an earlier prior")
    stage = PriorStage(**TINY, export_path=str(export_path), sample_every_n_steps=0)
    discriminator_before = flat(stage.discriminator)
    with pytest.raises(FileExistsError, match="overwrite_export"):
        trainer(tmp_path, max_steps=6).fit(stage, train_dataloaders=loader(2))
    assert stage.iteration == 0
    assert torch.equal(flat(stage.discriminator), discriminator_before)
    assert export_path.read_bytes() == b"an earlier prior"

    # overwrite_export=True replaces it at the end of training.
    stage = PriorStage(**TINY, export_path=str(export_path), overwrite_export=True, max_iterations=1,
                       sample_every_n_steps=0)
    trainer(tmp_path, max_epochs=1).fit(stage, train_dataloaders=loader(2))
    assert stage.iteration == 1
    load_stylegan2_prior(export_path)


def test_resume_continues_iterations_and_optimizer_state(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    settings = dict(**TINY, r1_every=2, sample_every_n_steps=0)

    first = PriorStage(**settings)
    trainer(tmp_path, max_epochs=1, enable_checkpointing=True,
            callbacks=[ModelCheckpoint(dirpath=checkpoints, save_last=True)]).fit(first, loader(3))
    assert first.iteration == 3
    saved = torch.load(checkpoints / "last.ckpt", weights_only=False)
    assert saved["prior_stage"] == {"iteration": 3}

    resumed = PriorStage(**settings)
    fit = trainer(tmp_path, max_epochs=2)
    fit.fit(resumed, loader(3), ckpt_path=checkpoints / "last.ckpt")
    assert resumed.iteration == 6
    generator_optimizer, discriminator_optimizer = fit.optimizers
    # Adam step counts carry over: D made 3 + R1 at 0, 2 before the checkpoint, 3 + R1 at 4 after.
    assert adam_steps(discriminator_optimizer) == 6 + 3
    assert adam_steps(generator_optimizer) == 6
    # The EMA came back from the checkpoint too (not a fresh copy of the restored generator).
    assert not torch.equal(flat(resumed.generator_ema), flat(resumed.generator))


class ImageLoggingCSVLogger(CSVLogger):
    """A logger with WandbLogger's `log_image` method, recording the calls."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.images: list[tuple[str, torch.Tensor, int | None]] = []

    def log_image(self, key: str, images: list, step: int | None = None, **kwargs) -> None:
        self.images += [(key, image, step) for image in images]


def test_validation_logs_fixed_samples_through_log_image(tmp_path):
    stage = PriorStage(**TINY, num_samples=4, sample_every_n_steps=0, max_iterations=2)
    logger = ImageLoggingCSVLogger(tmp_path)
    trainer(tmp_path, logger=logger, max_epochs=1, val_check_interval=1,
            num_sanity_val_steps=1).fit(stage, loader(2), loader(1))
    # One grid per validation (after each of the 2 iterations), none for the sanity check; fixed z.
    assert [(key, step) for key, _, step in logger.images] == [("samples", 1), ("samples", 2)]
    grid = logger.images[0][1]
    assert grid.shape[0] == 3 and grid.min() >= 0 and grid.max() <= 1
    assert "val/real_score" in stage.trainer.callback_metrics
    torch.testing.assert_close(stage.sample_images(), stage.sample_images())
    assert not (tmp_path / "samples").exists()
