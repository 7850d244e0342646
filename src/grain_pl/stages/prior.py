"""Stage 0 (optional): train a StyleGAN2 prior for a domain that has no public one.

GRAIN needs a pretrained StyleGAN2 at the HR size. For faces a downloaded rosinality file
(`stylegan2-ffhq-config-f.pt`) does; for any other domain this stage trains generator and discriminator on the
dataset's `hr` images and exports the *same* rosinality layout ({"g_ema", "latent_avg", "d", "g", "args"}),
so the later stages load either file the same way (`grain_pl.weights.stylegan2_rosinality.load_stylegan2_prior`).

The recipe is rosinality's `train.py` (StyleGAN2 config-f without ADA):

- non-saturating logistic loss for D and G; Adam with beta1 = 0, beta2 = 0.99, learning rate 0.002;
- lazy R1 on real images at iterations 0, `r1_every`, 2 * `r1_every`, ... (its own optimizer step, weight
  gamma / 2 * every, with the gradients zeroed first);
- optional lazy path-length regularization every `path_length_every` iterations (rosinality: 4; off by
  default here);
- the lazy-regularization correction of the optimizers: learning rate * c and betas ** c with
  c = every / (every + 1);
- style mixing with probability `mixing_probability`, for the fakes of both the D and the G step;
- an EMA generator (`generator_ema`, what gets exported as `g_ema`) with a half-life in images: rosinality's
  0.5 ** (32 / 10_000) per step at batch 32 becomes 0.5 ** (images_per_step / ema_half_life_images).

Lightning notes:
- The loop is the one GrainStage runs (`stages/gan_loop.py`): the discriminator step with lazy R1, its own
  `iteration` counter (saved in checkpoints; `max_iterations` is rosinality's `--iter`, leave `max_steps` at
  -1: it counts every D, G, R1 and path-length step) and the DDP check.
- Multi-GPU: use `strategy="ddp_find_unused_parameters_true"`; plain DDP is refused at fit start (each
  backward only reaches one network, the other is toggled off).
- Sample grids: add the `LogImageGrid` callback (conf/stages/prior.yaml does); `sample_images(batch)` gives
  the batch's real images next to `generator_ema` images of a fixed z.
- Lightning's "Found N module(s) in eval mode" warning at fit start is expected: it is `generator_ema`, which
  only samples.
- Precision: any. The lazy R1 and path-length passes always run in fp32 (autocast off): their gradients are
  taken with `torch.autograd.grad`, which a 16-mixed GradScaler does not scale.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path
from typing import ClassVar

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from grain_pl.losses.adversarial import generator_adversarial_loss
from grain_pl.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from grain_pl.stages.gan_loop import GanLoop, hide_unactionable_warnings
from grain_pl.weights.stylegan2_rosinality import LATENT_AVG_SAMPLES, LATENT_AVG_SEED, export_rosinality

# Seed of the fixed z behind every sample grid, so grids from different steps (and runs) are comparable.
SAMPLE_SEED = 1234
# rosinality's g_path_regularize: how fast the running mean path length follows the batch mean.
PATH_LENGTH_DECAY = 0.01
# Key of this stage's own loop state inside a Lightning checkpoint.
CHECKPOINT_KEY = "prior_stage"


def lazy_regularization_ratio(every: int) -> float:
    """c = every / (every + 1): the optimizer correction for a regularizer applied every `every` steps.

    0 (regularizer off) gives 1, no correction.
    """
    return every / (every + 1) if every > 0 else 1.0


def ema_decay(images_per_step: int, half_life_images: float) -> float:
    """Per-step EMA decay such that the weight of old parameters halves every `half_life_images` images."""
    return 0.5 ** (images_per_step / half_life_images)


class PriorStage(GanLoop):
    """Trains a StyleGAN2 generator / discriminator pair and exports a rosinality-format prior.

    Args:
        size: image resolution (a power of two); batches must hold `hr` images of (B, 3, size, size) in [-1, 1].
        style_dim, n_mlp, channel_multiplier, channel_max: StyleGAN2 architecture (rosinality's config-f:
            512, 8, 2, 512).
        learning_rate: Adam learning rate of both networks before the lazy-regularization correction.
        r1_gamma: R1 weight gamma (rosinality `--r1`).
        r1_every: R1 every this many iterations (rosinality `--d_reg_every`), as its own D optimizer step.
        mixing_probability: chance that a batch of fakes mixes two z (rosinality `--mixing`).
        ema_half_life_images: half-life of the EMA generator in images (rosinality: 10k images).
        path_length_every: path-length regularization every this many iterations (rosinality
            `--g_reg_every` = 4); 0 turns it off.
        path_length_weight: its weight (rosinality `--path_regularize`).
        path_length_batch_shrink: the path-length batch is the batch size divided by this.
        max_iterations: stop after this many iterations (one D step + one G step each); None: the Trainer's
            limits decide.
        export_path: where `on_train_end` writes the rosinality file; None: no export.
        overwrite_export: replace an existing `export_path`; without it an existing file fails at fit start.
    """

    adversarial_kind: ClassVar[str] = "logistic"
    r1_keeps_every_parameter: ClassVar[bool] = True  # rosinality's 0 * D(real) term

    def __init__(
        self,
        size: int = 256,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        channel_max: int = 512,
        learning_rate: float = 0.002,
        r1_gamma: float = 10.0,
        r1_every: int = 16,
        mixing_probability: float = 0.9,
        ema_half_life_images: float = 10_000.0,
        path_length_every: int = 0,
        path_length_weight: float = 2.0,
        path_length_batch_shrink: int = 2,
        max_iterations: int | None = None,
        export_path: str | None = None,
        overwrite_export: bool = False,
    ):
        super().__init__()
        hide_unactionable_warnings()
        if r1_every < 1:
            raise ValueError(f"r1_every must be >= 1, got {r1_every}")
        if path_length_every < 0:
            raise ValueError(f"path_length_every must be >= 0 (0: off), got {path_length_every}")
        if path_length_batch_shrink < 1:
            raise ValueError(f"path_length_batch_shrink must be >= 1, got {path_length_batch_shrink}")
        if not 0.0 <= mixing_probability <= 1.0:
            raise ValueError(f"mixing_probability must be in [0, 1], got {mixing_probability}")
        if ema_half_life_images <= 0:
            raise ValueError(f"ema_half_life_images must be > 0, got {ema_half_life_images}")
        self.save_hyperparameters()
        # Manual optimization: separate D, R1, G (and path-length) steps, as rosinality.
        self.automatic_optimization = False
        self.r1_gamma = r1_gamma
        self.r1_every = r1_every

        self.generator = StyleGAN2Generator(size, style_dim=style_dim, n_mlp=n_mlp,
                                            channel_multiplier=channel_multiplier, channel_max=channel_max)
        self.discriminator = StyleGAN2Discriminator(size, channel_multiplier=channel_multiplier,
                                                    channel_max=channel_max)
        # The EMA starts as an exact copy (same weights and const-noise buffers) and is never optimized.
        self.generator_ema = copy.deepcopy(self.generator).eval().requires_grad_(False)

        # GAN iterations done. Lightning's global_step counts optimizer steps (2-4 per iteration here).
        self.iteration = 0
        self.max_iterations = max_iterations
        # Running mean path length (rosinality `mean_path_length`); a buffer so checkpoints and devices follow.
        self.register_buffer("mean_path_length", torch.zeros(()))

    # --- Lightning plumbing ----------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> PriorStage:
        # Lightning switches the whole module to train mode; the EMA generator only ever samples.
        super().train(mode)
        self.generator_ema.eval()
        return self

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[generator optimizer, discriminator optimizer], with rosinality's lazy-regularization correction."""
        hparams = self.hparams
        optimizers = []
        for network, every in ((self.generator, hparams.path_length_every), (self.discriminator, hparams.r1_every)):
            ratio = lazy_regularization_ratio(every)
            optimizers.append(torch.optim.Adam(network.parameters(), lr=hparams.learning_rate * ratio,
                                               betas=(0.0**ratio, 0.99**ratio)))
        return optimizers

    def on_fit_start(self) -> None:
        super().on_fit_start()  # refuses plain DDP
        # Fail now rather than after hours of training.
        export_path = self.hparams.export_path
        if export_path is not None and Path(export_path).exists() and not self.hparams.overwrite_export:
            raise FileExistsError(f"export_path {export_path} already exists; choose another path or set "
                                  f"overwrite_export=True (--model.overwrite_export true) to replace it")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {"iteration": self.iteration}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.iteration = int(checkpoint.get(CHECKPOINT_KEY, {}).get("iteration", 0))

    def on_train_end(self) -> None:
        export_path = self.hparams.export_path
        if export_path is None or not self.trainer.is_global_zero:
            return
        try:
            written = self.export(export_path, overwrite=self.hparams.overwrite_export)
        except FileExistsError as error:
            raise FileExistsError(f"{error}. The trained weights are in the Lightning checkpoint: "
                                  f"PriorStage.load_from_checkpoint(ckpt).export(other_path)") from error
        rank_zero_info(f"PriorStage: exported the StyleGAN2 prior (iteration {self.iteration}) to {written}")

    # --- one GAN iteration -----------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        real = batch["hr"]
        size = self.hparams.size
        if real.ndim != 4 or real.shape[1:] != (3, size, size):
            raise ValueError(f"batch['hr']: expected (B, 3, {size}, {size}) images in [-1, 1], got "
                             f"{tuple(real.shape)}")
        batch_size = real.shape[0]
        generator_optimizer, discriminator_optimizer = self.optimizers()
        # rosinality regularizes at iteration 0, r1_every, 2 * r1_every, ...
        self.discriminator_step(real, discriminator_optimizer, with_r1=self.iteration % self.r1_every == 0)

        log = dict(batch_size=batch_size, on_step=True, on_epoch=False)
        self.log("train/g_loss", self.generator_step(batch_size, generator_optimizer), prog_bar=True, **log)
        every = self.hparams.path_length_every
        if every > 0 and self.iteration % every == 0:
            path_penalty = self.path_length_step(batch_size, generator_optimizer)
            self.log("train/path_length_penalty", path_penalty, **log)
            self.log("train/mean_path_length", self.mean_path_length.clone(), **log)

        # Half-life in images: count the images of every process.
        self.update_ema(ema_decay(batch_size * self.trainer.world_size, self.hparams.ema_half_life_images))
        self.iteration += 1

    def sample_z(self, batch_size: int) -> list[Tensor]:
        """One z batch, or two (style mixing) with probability `mixing_probability`."""
        count = 2 if float(torch.rand(())) < self.hparams.mixing_probability else 1
        return [torch.randn(batch_size, self.hparams.style_dim, device=self.device) for _ in range(count)]

    def discriminator_fake(self, real: Tensor) -> Tensor:
        return self.generator(self.sample_z(real.shape[0])).image

    def generator_step(self, batch_size: int, optimizer) -> Tensor:
        self.toggle_optimizer(optimizer)
        fake = self.generator(self.sample_z(batch_size)).image
        loss = generator_adversarial_loss(self.adversarial_kind, None, self.discriminator(fake))
        self.optimizer_update(optimizer, loss)
        self.untoggle_optimizer(optimizer)
        return loss.detach()

    def mixed_w_plus(self, ws: list[Tensor]) -> Tensor:
        """(B, num_ws, style_dim) from one or two w batches, crossing over at a random layer (as `forward`)."""
        num_ws = self.generator.num_ws
        if len(ws) == 1:
            return ws[0].unsqueeze(1).repeat(1, num_ws, 1)
        inject_index = int(torch.randint(1, num_ws, ()))
        return torch.cat([ws[0].unsqueeze(1).repeat(1, inject_index, 1),
                          ws[1].unsqueeze(1).repeat(1, num_ws - inject_index, 1)], dim=1)

    def path_length_step(self, batch_size: int, optimizer) -> Tensor:
        """Lazy path-length regularization (rosinality g_path_regularize) as a separate G step."""
        hparams = self.hparams
        path_batch_size = max(1, batch_size // hparams.path_length_batch_shrink)
        self.toggle_optimizer(optimizer)
        # fp32 whatever the precision: autograd.grad below is not scaled by a 16-mixed GradScaler.
        with torch.autocast(device_type=self.device.type, enabled=False):
            # Built by hand rather than through `generator.forward` because the gradient is taken w.r.t. W+.
            w_plus = self.mixed_w_plus([self.generator.mapping(z) for z in self.sample_z(path_batch_size)])
            image = self.generator.synthesize(w_plus).image
            noise = torch.randn_like(image) / math.sqrt(image.shape[2] * image.shape[3])
            (w_grad,) = torch.autograd.grad((image * noise).sum(), w_plus, create_graph=True)
            path_lengths = w_grad.square().sum(2).mean(1).sqrt()
            path_mean = self.mean_path_length + PATH_LENGTH_DECAY * (path_lengths.detach().mean()
                                                                     - self.mean_path_length)
            penalty = (path_lengths - path_mean).square().mean()
            # The zero term keeps the last ToRGB bias in the graph (DDP), as rosinality.
            loss = hparams.path_length_weight * hparams.path_length_every * penalty + 0 * image[0, 0, 0, 0]
            self.optimizer_update(optimizer, loss)
        self.untoggle_optimizer(optimizer)
        self.mean_path_length.copy_(path_mean.detach())
        return penalty.detach()

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        """generator_ema <- decay * generator_ema + (1 - decay) * generator (buffers copied)."""
        for ema_param, param in zip(self.generator_ema.parameters(), self.generator.parameters(), strict=True):
            ema_param.lerp_(param.detach(), 1.0 - decay)
        for ema_buffer, buffer in zip(self.generator_ema.buffers(), self.generator.buffers(), strict=True):
            ema_buffer.copy_(buffer)

    # --- validation and samples ------------------------------------------------------------------------------

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # Cheap: D's mean logit on held-out reals (a drop against train/real_score hints at D overfitting).
        real = batch["hr"]
        self.log("val/real_score", self.discriminator(real).mean(), batch_size=real.shape[0], sync_dist=True)

    @torch.no_grad()
    def sample_images(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The sample grid's columns (LogImageGrid): the batch's real images and `generator_ema` images of a fixed
        z (seed SAMPLE_SEED, one per real image) with the stored noise, so grids of different steps compare."""
        real = batch["hr"]
        rng = torch.Generator().manual_seed(SAMPLE_SEED)
        z = torch.randn(real.shape[0], self.hparams.style_dim, generator=rng).to(self.device)
        return {"hr": real, "generator_ema": self.generator_ema(z, noise_mode="const").image}

    # --- export ----------------------------------------------------------------------------------------------

    def rosinality_args(self) -> argparse.Namespace:
        """The `args` entry of the exported file (rosinality train.py's names where it has one)."""
        hparams = self.hparams
        return argparse.Namespace(
            size=hparams.size, latent=hparams.style_dim, n_mlp=hparams.n_mlp,
            channel_multiplier=hparams.channel_multiplier, channel_max=hparams.channel_max,
            r1=hparams.r1_gamma, d_reg_every=hparams.r1_every, g_reg_every=hparams.path_length_every,
            path_regularize=hparams.path_length_weight, path_batch_shrink=hparams.path_length_batch_shrink,
            mixing=hparams.mixing_probability, learning_rate=hparams.learning_rate,
            ema_half_life_images=hparams.ema_half_life_images, iter=self.iteration,
        )

    @torch.no_grad()
    def export(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the prior in rosinality's layout: g_ema (the EMA generator), latent_avg, d, g, args.

        latent_avg is the mean of LATENT_AVG_SAMPLES mapped z drawn with LATENT_AVG_SEED (what
        `load_stylegan2_prior` would compute for a file without one).
        """
        rng = torch.Generator().manual_seed(LATENT_AVG_SEED)
        latent_avg = self.generator_ema.mean_latent(LATENT_AVG_SAMPLES, rng=rng).reshape(-1)
        return export_rosinality(self.generator_ema, self.discriminator, latent_avg, path, g=self.generator,
                                 args=self.rosinality_args(), overwrite=overwrite)
