"""What the two GAN training loops share: `GrainStage` (stages 1-3, final) and `PriorStage`.

Optimization is manual. One *iteration* is an optional discriminator step (with lazy R1 when due) followed by
the generator-side step(s):

- `iteration` counts them (saved in checkpoints) and `max_iterations` stops the fit, like the official
  `--max_steps` and rosinality's `--iter`: with manual optimization Lightning's `max_steps` counts every
  optimizer step (G, D, R1, path length) instead.
- `discriminator_step`: D toggled on, its adversarial loss on real and (no-grad) fake images, then, when the
  caller says R1 is due, lazy R1 on the same real images as its own D step, with the gradients zeroed first
  (GRAIN's official code forgets) and always in fp32 (`discriminator_r1`). Each stage keeps its reference's R1
  schedule: GrainStage on every `r1_every`-th D step (official GRAIN), PriorStage at iterations 0, `r1_every`,
  ... (rosinality).
- `check_ddp_finds_unused_parameters`: plain DDP cannot train either loop; it fails at fit start.
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import pytorch_lightning as pl
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from grain_pl.losses.adversarial import discriminator_adversarial_loss, discriminator_r1, lazy_r1_weight


def hide_unactionable_warnings() -> None:
    """Two warnings every fit of a stage printed, neither actionable: the frozen parts (the prior, the loss
    networks, the stages' frozen modules) are in eval mode on purpose, and Lightning uses a torch.utils._pytree
    name that torch deprecated. Called when a stage is built (filters set at import would not survive a caller's
    `warnings.catch_warnings`); filterwarnings drops an identical earlier entry, so calls do not pile up."""
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class GanLoop(pl.LightningModule):
    """Mixin for a manually optimized GAN stage. The subclass sets `discriminator`, `adversarial_kind`,
    `r1_gamma`, `r1_every`, `iteration` and `max_iterations` (None: no limit), and defines
    `discriminator_fake(real)`."""

    discriminator: nn.Module | None
    adversarial_kind: str
    r1_gamma: float
    r1_every: int
    iteration: int
    max_iterations: int | None
    # rosinality adds 0 * D(real) to the R1 loss, so D's final bias (no effect on input gradients) gets a zero
    # gradient and Adam still moves it by its momentum; official GRAIN leaves that bias out of the R1 step.
    r1_keeps_every_parameter: ClassVar[bool] = False

    # ----- what a stage defines -----
    def discriminator_fake(self, real: torch.Tensor) -> torch.Tensor:
        """The fake images of a discriminator step (called under no_grad), as many as `real`."""
        raise NotImplementedError

    def discriminator_input(self, image: torch.Tensor) -> torch.Tensor:
        """An image as the discriminator sees it (a stage may resize)."""
        return image

    # ----- the steps -----
    def optimizer_update(self, optimizer, loss: torch.Tensor) -> None:
        """One manual step of `optimizer` on `loss` (the caller has toggled it on)."""
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()

    def discriminator_step(self, real: torch.Tensor, optimizer, with_r1: bool) -> dict[str, torch.Tensor]:
        """One discriminator step, then lazy R1 as its own step if `with_r1`; logs and returns the losses."""
        self.toggle_optimizer(optimizer)
        with torch.no_grad():
            fake = self.discriminator_fake(real)
        real_input = self.discriminator_input(real)
        real_logits = self.discriminator(real_input)
        fake_logits = self.discriminator(self.discriminator_input(fake))
        loss = discriminator_adversarial_loss(self.adversarial_kind, real_logits, fake_logits)
        self.optimizer_update(optimizer, loss)
        logs = {"train/d_loss": loss.detach(), "train/real_score": real_logits.detach().mean(),
                "train/fake_score": fake_logits.detach().mean()}
        if with_r1:
            penalty, r1_logits = discriminator_r1(self.discriminator, real_input)
            r1_loss = penalty * lazy_r1_weight(self.r1_gamma, self.r1_every)
            if self.r1_keeps_every_parameter:
                r1_loss = r1_loss + 0 * r1_logits.sum()
            self.optimizer_update(optimizer, r1_loss)
            logs["train/r1"] = penalty.detach()
        self.untoggle_optimizer(optimizer)
        self.log_dict(logs, batch_size=real.shape[0])
        return logs

    # ----- fit start: fail before any work -----
    def on_fit_start(self) -> None:
        self.check_ddp_finds_unused_parameters()

    def check_ddp_finds_unused_parameters(self) -> None:
        """Plain DDP cannot train a GAN stage: each backward reaches only the generator side or only the
        discriminator (the other is toggled off), so DDP's reducer would wait for gradients that never come.
        Fail at fit start, before any work, on every rank alike (no rank waits)."""
        model = self.trainer.model
        if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
            raise ValueError(f"{type(self).__name__} under DDP needs strategy='ddp_find_unused_parameters_true' "
                             "(or DDPStrategy(find_unused_parameters=True)): each backward leaves some trainable "
                             "parameters without a gradient (the GAN steps reach only G or only D)")

    # ----- the iteration limit -----
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
