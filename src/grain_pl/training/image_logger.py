"""LogImageGrid: periodic grids of a module's images (HR, LR, y_inv, prior, output...), to W&B and to PNG files.

Convention: the LightningModule defines

    def sample_images(self, batch) -> dict[str, Tensor]:   # name -> (B, 3, H, W) in [-1, 1], in column order
        out = self.grain(batch["hr"])
        return {"hr": batch["hr"], "lr": out.lr, "y_inv": out.y_inv, "prior_image": out.prior_image,
                "hr_out": out.hr_out}

and the grid has one row per sample and one column per entry. Smaller images (the LR) are enlarged to the
largest size with nearest-neighbour interpolation, so every LR pixel shows as a block.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from lightning_utilities.core.apply_func import apply_to_collection
from pytorch_lightning.loggers import WandbLogger
from torchvision.utils import make_grid, save_image

GRID_PADDING = 2


def first_samples(batch: Any, count: int) -> Any:
    """The batch cut to its first `count` samples: every tensor with a batch dimension is sliced, anything else
    (paths, scalars) is left as it is. Saves the forward pass on samples the grid would drop anyway."""
    return apply_to_collection(batch, torch.Tensor, lambda tensor: tensor[:count] if tensor.ndim > 0 else tensor)


def image_grid(images: Mapping[str, torch.Tensor], max_images: int) -> torch.Tensor:
    """(3, H, W) float grid in [0, 1] on the CPU: one row per sample, one column per entry of `images`."""
    columns = [image for image in images.values() if image is not None]
    if not columns:
        raise ValueError("sample_images returned no images")
    for name, image in images.items():
        if image is not None and (image.ndim != 4 or image.shape[1] not in (1, 3)):
            raise ValueError(f"sample_images()[{name!r}] must be (B, 3, H, W), got {tuple(image.shape)}")
    rows = min(max_images, *(image.shape[0] for image in columns))
    height = max(image.shape[-2] for image in columns)
    width = max(image.shape[-1] for image in columns)

    tiles = []
    for image in columns:
        image = image[:rows].detach().float().cpu()
        if tuple(image.shape[-2:]) != (height, width):
            image = F.interpolate(image, size=(height, width), mode="nearest")  # keep LR pixels visible
        tiles.append(((image + 1) / 2).clamp(0, 1).expand(-1, 3, -1, -1))
    # (columns, rows, 3, H, W) -> row-major (rows * columns, 3, H, W): make_grid fills rows left to right.
    ordered = torch.stack(tiles, dim=1).flatten(0, 1)
    return make_grid(ordered, nrow=len(tiles), padding=GRID_PADDING)


def samples_dir(trainer: pl.Trainer) -> Path:
    """Where the PNG grids go: `<save_dir>/<name>/<version>/samples` of the first logger, as Lightning's
    ModelCheckpoint places `checkpoints/` (for CSV and TensorBoard that is `trainer.log_dir`; for W&B it is
    `<save_dir>/<project>/<run id>`, one folder per run), or `<default_root_dir>/samples` without a logger."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir) / "samples"
    logger = trainer.loggers[0]
    root = Path(logger.save_dir or trainer.default_root_dir)
    if isinstance(logger, WandbLogger):
        logger.experiment  # noqa: B018 -- the run id (our folder name) exists once the run is started
    parts = [part for part in (logger.name, logger.version) if part is not None]
    if len(parts) == 2 and not isinstance(parts[1], str):
        parts[1] = f"version_{parts[1]}"
    return root.joinpath(*map(str, parts)) / "samples"


class LogImageGrid(pl.Callback):
    """Log a grid of `pl_module.sample_images(batch)` every `every_n_steps` optimizer steps and on the first
    batch of each validation run (sanity check excluded), on global rank zero only.

    The images are computed under torch.no_grad and the trainer's precision context, with the module in
    whatever mode Lightning put it (train mode in training, eval mode in validation). Each grid is

    - logged to every WandbLogger of the trainer as "train/samples" / "val/samples", captioned with the
      column names, at `trainer.global_step`;
    - always saved as `samples_dir(trainer)/{train|val}_step{global_step:07d}.png`.

    Args:
        every_n_steps: training grids whenever `trainer.global_step` reaches a new multiple of this (robust
            to steps that jump by more than one, as with several optimizers per batch); 0 turns them off.
        max_images: rows of the grid (the batch is cut to this many samples before `sample_images`).
        on_validation: also log a grid from the first validation batch.
    """

    def __init__(self, every_n_steps: int = 500, max_images: int = 4, on_validation: bool = True) -> None:
        super().__init__()
        if every_n_steps < 0:
            raise ValueError(f"every_n_steps must be >= 0, got {every_n_steps}")
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        self.every_n_steps = every_n_steps
        self.max_images = max_images
        self.on_validation = on_validation
        self._last_train_interval = 0
        self._validation_logged = False
        self.saved_paths: list[Path] = []  # the PNGs written by this callback, in order (handy in notebooks)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "sample_images", None)):
            raise TypeError(f"LogImageGrid needs {type(pl_module).__name__}.sample_images(batch) -> "
                            "dict[str, Tensor] (images in [-1, 1], one column each)")

    # ----- training -----
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A resumed run continues counting from its restored step instead of logging at once.
        self._last_train_interval = trainer.global_step // self.every_n_steps if self.every_n_steps else 0

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self.every_n_steps:
            return
        interval = trainer.global_step // self.every_n_steps
        # Gradient accumulation repeats a global_step over several batches: log it once.
        if interval <= self._last_train_interval:
            return
        self._last_train_interval = interval
        if trainer.is_global_zero:
            self.log_grid(trainer, pl_module, batch, stage="train")

    # ----- validation -----
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation_logged = False

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if not self.on_validation or self._validation_logged or trainer.sanity_checking:
            return
        self._validation_logged = True
        if trainer.is_global_zero:
            self.log_grid(trainer, pl_module, batch, stage="val")

    # ----- the grid -----
    def log_grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, stage: str) -> Path:
        """Build the grid of this batch, send it to W&B loggers and save it as a PNG; returns the PNG path."""
        # The step's precision context (e.g. bf16 autocast): Lightning applies it to *_step only, not to hooks.
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            images = pl_module.sample_images(first_samples(batch, self.max_images))
        grid = image_grid(images, self.max_images)
        names = [name for name, image in images.items() if image is not None]
        step = trainer.global_step

        pixels = grid.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy()  # HWC uint8: no W&B rescaling
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"{stage}/samples", images=[pixels], caption=[" | ".join(names)], step=step)

        path = samples_dir(trainer) / f"{stage}_step{step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        self.saved_paths.append(path)
        return path
