"""ResumeProbe: a callback that a `grain fit` subprocess of tests/stages/test_resume.py loads (through
`--trainer.callbacks` and PYTHONPATH=tests/stages) to report the state training starts and ends in.

It appends one JSON object per line to `path`:

- "train_start": what Lightning restored before the first batch: loop counters, the stage's iteration, every
  optimizer's Adam step counts and a fingerprint of its moments, the GradScaler state (16-mixed), and a
  fingerprint of the weights;
- "first_batch": the index of the first batch trained after that (a mid-epoch resume continues the epoch);
- "batch": every training batch's epoch, index and image paths (which data a resumed epoch goes on with);
- "train_end": the counters when the fit ends.

Not a test module (no test_ prefix): pytest never collects it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

# The parameters whose sum fingerprints the weights: the stage-1 encoder, trained from the first step.
FINGERPRINT_PREFIX = "grain.encoder."


def weights_fingerprint(state: dict[str, torch.Tensor]) -> float:
    return float(sum(value.double().sum() for key, value in state.items()
                     if key.startswith(FINGERPRINT_PREFIX) and value.is_floating_point()))


def adam_steps(optimizer_state: dict[Any, dict[str, Any]]) -> list[int]:
    """The distinct per-parameter Adam step counts of one optimizer (one value when every parameter stepped)."""
    return sorted({int(state["step"]) for state in optimizer_state.values() if "step" in state})


def adam_moment_fingerprint(optimizer_state: dict[Any, dict[str, Any]]) -> float:
    return float(sum(state["exp_avg"].double().sum() for state in optimizer_state.values() if "exp_avg" in state))


def scaler_state(trainer: pl.Trainer) -> dict[str, float] | None:
    scaler = getattr(trainer.precision_plugin, "scaler", None)
    if scaler is None:
        return None
    return {key: float(value) for key, value in scaler.state_dict().items()}


class ResumeProbe(pl.Callback):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = Path(path)
        self._first_batch_reported = False

    def _report(self, event: str, trainer: pl.Trainer, pl_module: pl.LightningModule, **extra: Any) -> None:
        record = {
            "event": event,
            "pid": os.getpid(),
            "global_step": trainer.global_step,
            "iteration": pl_module.iteration,
            "discriminator_steps": pl_module.discriminator_steps,
            "epoch": trainer.current_epoch,
            "batches_done_in_epoch": trainer.fit_loop.epoch_loop.batch_progress.current.processed,
            "adam_steps": [adam_steps(optimizer.state) for optimizer in trainer.optimizers],
            "adam_moments": [adam_moment_fingerprint(optimizer.state) for optimizer in trainer.optimizers],
            "scaler": scaler_state(trainer),
            "weights": weights_fingerprint(pl_module.state_dict()),
            "checkpoint_io": type(trainer.strategy.checkpoint_io).__name__,
            **extra,
        }
        with self.path.open("a") as file:  # one short append per event: a later SIGKILL loses nothing written
            file.write(json.dumps(record) + "\n")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report("train_start", trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if not self._first_batch_reported:
            self._first_batch_reported = True
            self._report("first_batch", trainer, pl_module, batch_idx=batch_idx)
        record = {"event": "batch", "epoch": trainer.current_epoch, "batch_idx": batch_idx,
                  "paths": [str(path) for path in batch["path"]]}
        with self.path.open("a") as file:
            file.write(json.dumps(record) + "\n")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._report("train_end", trainer, pl_module)
