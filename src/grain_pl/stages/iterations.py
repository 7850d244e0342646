"""Stopping a manually optimized stage after a number of iterations.

With manual optimization Lightning's `max_steps` counts every optimizer step (generator, discriminator, R1),
so a stage counts its own iterations (one generator-side step each, saved in its checkpoints) and stops at
`max_iterations`, like the official `--max_steps` and rosinality's `--iter`.
"""

from __future__ import annotations

import pytorch_lightning as pl


class IterationLimit(pl.LightningModule):
    """Mixin: the subclass keeps `self.iteration` and `self.max_iterations` (None: no limit)."""

    iteration: int
    max_iterations: int | None

    def reached_max_iterations(self) -> bool:
        return self.max_iterations is not None and self.iteration >= self.max_iterations

    def on_train_batch_start(self, batch, batch_idx: int) -> int | None:
        if self.reached_max_iterations():
            self.trainer.should_stop = True
            return -1  # skip the rest of the epoch; should_stop ends the fit
        return None

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.reached_max_iterations():
            self.trainer.should_stop = True
