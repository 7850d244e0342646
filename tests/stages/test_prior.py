"""PriorStage: a tiny StyleGAN2 trains on random images, regularizes, keeps an EMA, resumes, exports, and logs
sample grids through LogImageGrid as the other stages do."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset

from grain_pl.stages.prior import PriorStage, ema_decay, lazy_regularization_ratio
from grain_pl.training import LogImageGrid
from grain_pl.training.image_logger import GRID_PADDING, first_samples, image_grid
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

    def discriminator_step(self, real, optimizer, with_r1):
        if with_r1:
            self.r1_iterations.append(self.iteration)
        return super().discriminator_step(real, optimizer, with_r1)

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
                               max_iterations=6, export_path=str(export_path))
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
    stage = PriorStage(**TINY, export_path=str(export_path))
    discriminator_before = flat(stage.discriminator)
    with pytest.raises(FileExistsError, match="overwrite_export"):
        trainer(tmp_path, max_steps=6).fit(stage, train_dataloaders=loader(2))
    assert stage.iteration == 0
    assert torch.equal(flat(stage.discriminator), discriminator_before)
    assert export_path.read_bytes() == b"an earlier prior"

    # overwrite_export=True replaces it at the end of training.
    stage = PriorStage(**TINY, export_path=str(export_path), overwrite_export=True, max_iterations=1)
    trainer(tmp_path, max_epochs=1).fit(stage, train_dataloaders=loader(2))
    assert stage.iteration == 1
    load_stylegan2_prior(export_path)


def test_resume_continues_iterations_and_optimizer_state(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    settings = dict(**TINY, r1_every=2)

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


def test_sample_images_fit_log_image_grid():
    """LogImageGrid's convention: sample_images(batch) -> {column: (B, 3, H, W)}; the fakes come from a fixed z."""
    stage = PriorStage(**TINY)
    batch = next(iter(loader(1, batch_size=3)))
    images = stage.sample_images(batch)
    assert list(images) == ["hr", "generator_ema"]
    assert images["hr"] is batch["hr"] and images["generator_ema"].shape == (3, 3, SIZE, SIZE)
    other_batch = {"hr": torch.zeros_like(batch["hr"])}
    torch.testing.assert_close(stage.sample_images(other_batch)["generator_ema"], images["generator_ema"],
                               rtol=0, atol=0)
    with torch.no_grad():  # another EMA generator gives other samples
        for parameter in stage.generator_ema.parameters():
            parameter.add_(0.1)
    assert not torch.equal(stage.sample_images(batch)["generator_ema"], images["generator_ema"])


def test_log_image_grid_writes_prior_sample_grids(tmp_path):
    stage = PriorStage(**TINY, max_iterations=2)
    grids = LogImageGrid(every_n_steps=3, max_images=2)  # 3 optimizer steps an iteration: D, R1 at 0, G
    trainer(tmp_path, logger=CSVLogger(tmp_path), callbacks=[grids], max_epochs=1, val_check_interval=2,
            num_sanity_val_steps=1).fit(stage, loader(2), loader(1))
    # global_step 3 after iteration 0 (D, R1, G), 5 after iteration 1 (D, G); one validation at the end.
    assert [path.name for path in grids.saved_paths] == ["train_step0000003.png", "val_step0000005.png"]
    assert all(path.parent == tmp_path / "lightning_logs" / "version_0" / "samples" for path in grids.saved_paths)
    tile = SIZE + GRID_PADDING
    for path in grids.saved_paths:
        with Image.open(path) as grid:  # 2 rows (max_images) x 2 columns (hr | generator_ema)
            assert grid.size == (2 * tile + GRID_PADDING, 2 * tile + GRID_PADDING)
    # The validation grid was the last thing drawn: it is the trained stage's real | fixed-z sample pairs.
    val_batch = first_samples(next(iter(loader(1))), 2)
    expected = image_grid(stage.sample_images(val_batch), max_images=2).mul(255).round()
    with Image.open(grids.saved_paths[-1]) as grid:
        pixels = torch.from_numpy(np.array(grid.convert("RGB"))).permute(2, 0, 1).float()
    assert (pixels - expected).abs().max() <= 1  # 8-bit rounding: round() vs torchvision's +0.5
    assert "val/real_score" in stage.trainer.callback_metrics
