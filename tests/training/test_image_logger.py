"""LogImageGrid on a tiny stand-in module: grid layout, PNG files, offline W&B media, step schedule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_lightning.loggers import CSVLogger, WandbLogger
from torch import nn
from torch.utils.data import DataLoader, Dataset

from grain_pl.training.image_logger import GRID_PADDING, LogImageGrid, image_grid

HEIGHT, WIDTH = 8, 12  # not square, so a transposed grid would show
BATCH = 4


class TinyImages(Dataset):
    """Batches shaped like grain_pl's data module: {"hr": (3, H, W) in [-1, 1], "path": str}."""

    def __init__(self, count: int = 8) -> None:
        self.images = torch.rand(count, 3, HEIGHT, WIDTH) * 2 - 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        return {"hr": self.images[index], "path": f"image_{index}.png"}


class TinyRescaler(pl.LightningModule):
    """HR -> half-size LR -> HR, with one conv each way: enough to have hr, lr and hr_out images."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.up = nn.Conv2d(3, 3, 3, padding=1)
        self.modes_seen: list[bool] = []

    def forward(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lr = torch.tanh(self.down(hr))
        return lr, torch.tanh(self.up(F.interpolate(lr, scale_factor=2.0)))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return F.mse_loss(self(batch["hr"])[1], batch["hr"])

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/loss", F.mse_loss(self(batch["hr"])[1], batch["hr"]), batch_size=len(batch["hr"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def sample_images(self, batch: dict) -> dict[str, torch.Tensor]:
        assert not torch.is_grad_enabled()
        self.modes_seen.append(self.training)
        lr, hr_out = self(batch["hr"])
        return {"hr": batch["hr"], "lr": lr, "hr_out": hr_out}


def fit(tmp_path: Path, logger, max_images: int = 3) -> tuple[TinyRescaler, LogImageGrid]:
    model, callback = TinyRescaler(), LogImageGrid(every_n_steps=2, max_images=max_images)
    loader = DataLoader(TinyImages(), batch_size=BATCH)  # 2 batches an epoch
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=4, logger=logger, callbacks=[callback], default_root_dir=tmp_path,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=1, limit_val_batches=2, log_every_n_steps=1,
    )
    trainer.fit(model, loader, loader)
    return model, callback


def expected_grid_size(rows: int, columns: int) -> tuple[int, int]:
    """PIL's (width, height) of a make_grid of rows x columns tiles."""
    return (columns * (WIDTH + GRID_PADDING) + GRID_PADDING, rows * (HEIGHT + GRID_PADDING) + GRID_PADDING)


def test_pngs_with_csv_logger(tmp_path: Path) -> None:
    model, callback = fit(tmp_path, CSVLogger(tmp_path, name="csv"))
    samples = tmp_path / "csv" / "version_0" / "samples"
    # Steps 2 and 4 in training; one validation run after each epoch (steps 2 and 4); none in the sanity check.
    names = sorted(path.name for path in samples.iterdir())
    assert names == ["train_step0000002.png", "train_step0000004.png", "val_step0000002.png", "val_step0000004.png"]
    assert sorted(path.name for path in callback.saved_paths) == names
    for path in samples.iterdir():
        with Image.open(path) as png:
            assert png.size == expected_grid_size(rows=3, columns=3)  # max_images rows, hr | lr | hr_out
    # Train grids come from the module in train mode, validation grids in eval mode (Lightning's doing).
    assert model.modes_seen == [True, False, True, False]


def test_images_reach_the_offline_wandb_run(tmp_path: Path, isolated_wandb: None) -> None:
    logger = WandbLogger(save_dir=tmp_path, offline=True, project="grain_pl_test")
    fit(tmp_path, logger, max_images=2)
    run_id, files_dir = logger.experiment.id, Path(logger.experiment.dir)
    logger.experiment.finish()

    media = sorted(files_dir.glob("media/images/**/*.png"))
    assert len(media) == 4, media  # train at 2, 4 and val at 2, 4
    assert {path.parent.name for path in media} == {"train", "val"}  # keys "train/samples", "val/samples"
    with Image.open(media[0]) as png:
        assert png.size == expected_grid_size(rows=2, columns=3)
    # The PNG copies sit next to where Lightning puts this run's checkpoints.
    assert len(list((tmp_path / "grain_pl_test" / run_id / "samples").glob("*.png"))) == 4


def test_grid_layout_and_nearest_lr() -> None:
    hr = torch.rand(2, 3, 4, 6) * 2 - 1
    lr = torch.rand(2, 3, 2, 3) * 2 - 1
    grid = image_grid({"hr": hr, "lr": lr}, max_images=4)
    pad = GRID_PADDING
    assert grid.shape == (3, 2 * (4 + pad) + pad, 2 * (6 + pad) + pad)

    def tile(row: int, column: int) -> torch.Tensor:
        top, left = pad + row * (4 + pad), pad + column * (6 + pad)
        return grid[:, top:top + 4, left:left + 6]

    to_unit = lambda image: ((image + 1) / 2).clamp(0, 1)  # noqa: E731
    torch.testing.assert_close(tile(1, 0), to_unit(hr[1]))
    # Each LR pixel becomes a 2x2 block.
    torch.testing.assert_close(tile(1, 1), to_unit(lr[1]).repeat_interleave(2, -2).repeat_interleave(2, -1))


def test_max_images_and_out_of_range_values() -> None:
    images = {"a": torch.full((5, 3, 4, 4), 3.0), "b": torch.full((5, 3, 4, 4), -3.0)}
    grid = image_grid(images, max_images=2)
    assert grid.shape[-2] == 2 * (4 + GRID_PADDING) + GRID_PADDING
    pixels = np.unique(grid.numpy())
    assert pixels.min() == 0.0 and pixels.max() == 1.0


def test_module_without_sample_images_is_refused(tmp_path: Path) -> None:
    class NoSamples(TinyRescaler):
        sample_images = None  # type: ignore[assignment]

    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, callbacks=[LogImageGrid()], limit_val_batches=0,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    with pytest.raises(TypeError, match="sample_images"):
        trainer.fit(NoSamples(), DataLoader(TinyImages(), batch_size=BATCH))
