"""Chaining the stages: start a stage from the previous stage's checkpoint.

    trainer = Trainer(callbacks=[InitFromStage("runs/stage1/checkpoints/last.ckpt")])
    trainer.fit(Stage2(prior_path="stylegan2-ffhq-config-f.pt"), datamodule)

At the start of a fit it loads exactly the parts the stage inherits (`Stage2.inherited_parts`: encoder and
decoder; Stage3: + latent_codes; FinalStage: + fusion), strictly: a missing, unexpected or mis-shaped tensor is
an error naming the file. What it loaded is logged and kept in the stage's hyper-parameters. When the fit
resumes a run of the same stage (`ckpt_path`), the resumed checkpoint wins and this callback loads nothing.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_info


class InitFromStage(pl.Callback):
    def __init__(self, checkpoint: str, parts: list[str] | None = None) -> None:
        self.checkpoint = checkpoint
        self.parts = tuple(parts) if parts is not None else None

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # on_fit_start runs after Lightning restored a resumed run's weights, so ckpt_path is known here
        if trainer.ckpt_path:
            rank_zero_info(f"[InitFromStage] resuming from {trainer.ckpt_path}; not loading {self.checkpoint}")
            return
        parts = self.parts if self.parts is not None else pl_module.inherited_parts
        if not parts:
            rank_zero_info(f"[InitFromStage] {type(pl_module).__name__} inherits no parts; {self.checkpoint} unused")
            return
        pl_module.load_parts(self.checkpoint, parts)
