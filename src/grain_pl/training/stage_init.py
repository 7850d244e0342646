"""Chaining the stages: start a stage from the previous stage's checkpoint.

    trainer = Trainer(callbacks=[InitFromStage("runs/stage1/checkpoints/last.ckpt")])
    trainer.fit(Stage2(prior_path="stylegan2-ffhq-config-f.pt"), datamodule)

At the start of a fit it loads exactly the parts the stage inherits (`Stage2.inherited_parts`: encoder and
decoder; Stage3: + latent_codes; FinalStage: + fusion), strictly: a missing, unexpected or mis-shaped tensor is
an error naming the file. What it loaded is logged and kept in the stage's hyper-parameters. When the fit
resumes a run of the same stage (`ckpt_path`), the resumed checkpoint wins and this callback loads nothing.

`check(stage)` does the reading and checking before the fit (`grain fit` calls it before anything is written); the
fit then loads what it read. A `last.ckpt` beside a newer `last-v1.ckpt` (a second run that wrote into the same
folder, as Lightning names it) is refused: it is the older run's.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from grain_pl.weights.io import CheckpointError


def newer_versions(checkpoint: str | Path) -> list[Path]:
    """Lightning's `<name>-v1.ckpt`, `<name>-v2.ckpt`, ... beside `checkpoint`, written after it."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        return []
    written = checkpoint.stat().st_mtime
    return sorted(path for path in checkpoint.parent.glob(f"{checkpoint.stem}-v*{checkpoint.suffix}")
                  if path.stem[len(checkpoint.stem) + 2:].isdigit() and path.stat().st_mtime >= written)


class InitFromStage(pl.Callback):
    def __init__(self, checkpoint: str, parts: list[str] | None = None) -> None:
        self.checkpoint = checkpoint
        self.parts = tuple(parts) if parts is not None else None
        self._state: dict[str, torch.Tensor] | None = None  # what check() read, for on_fit_start

    def check(self, pl_module: pl.LightningModule) -> None:
        """Read the checkpoint and check that the stage's parts fit it (CheckpointError naming the file)."""
        newer = newer_versions(self.checkpoint)
        if newer:
            raise CheckpointError(
                f"{self.checkpoint}: an earlier run's checkpoint: {', '.join(path.name for path in newer)} beside it "
                "is newer (a later run wrote into the same folder). Pass --init_from with the one to start from, "
                "or move the older files away")
        parts = self.parts if self.parts is not None else getattr(pl_module, "inherited_parts", ())
        if parts:
            self._state = pl_module.check_parts(self.checkpoint, parts)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_fit_start runs after Lightning restored a resumed run's weights, so ckpt_path is known here
        if trainer.ckpt_path:
            rank_zero_info(f"[InitFromStage] resuming from {trainer.ckpt_path}; not loading {self.checkpoint}")
            return
        parts = self.parts if self.parts is not None else pl_module.inherited_parts
        if not parts:
            rank_zero_info(f"[InitFromStage] {type(pl_module).__name__} inherits no parts; {self.checkpoint} unused")
            return
        pl_module.load_parts(self.checkpoint, parts, state=self._state)
        self._state = None
