"""What every GRAIN training stage shares.

A stage is a LightningModule that builds the *same* GRAIN under `self.grain` (so checkpoints chain by key) and
only decides which parts train, what its output image is, and which losses and discriminator it uses:

| stage  | trains                                   | output        | adversarial              | D every |
|--------|------------------------------------------|---------------|--------------------------|---------|
| stage1 | encoder, decoder                         | `y_inv`       | RaGAN, patch D at 256    | 6       |
| stage2 | latent_codes                             | `prior_image` | logistic, StyleGAN2 D    | 5       |
| stage3 | fusion                                   | `hr_out`      | logistic, StyleGAN2 D    | 3       |
| final  | encoder, decoder, latent_codes, fusion   | `hr_out`      | logistic, StyleGAN2 D    | 3       |

With `encoder="bicubic"` (an upscaler of ordinary thumbnails) the encoder has no parameters: stage 1 trains the
decoder alone, the final stage everything but the encoder, and the LR-guidance loss is off.

The StyleGAN2 generator is always frozen. Frozen parts run under `no_grad`, have `requires_grad=False` and stay
in eval mode. Optimization is manual (the loop PriorStage shares, `stages/gan_loop.py`): a discriminator step
every `d_every` iterations (at the start of the iteration, as the official code), lazy R1 every `r1_every`
discriminator steps (with the gradients zeroed first: the official code forgets), then the generator-side step.

Two ideas kept apart: the `InitFromStage` callback starts a stage from the previous stage's checkpoint (the
parts it inherits, strictly, logged and recorded in the hyper-parameters); Lightning's `ckpt_path` resumes the
same stage (optimizer, scaler, loop and iteration counter included).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import nn

from grain_pl.io.images import to_uint8
from grain_pl.losses import LossWeights, PerceptualLoss, weighted_sum
from grain_pl.losses.adversarial import generator_adversarial_loss
from grain_pl.losses.identity import IdentityLoss
from grain_pl.losses.reconstruction import LRGuidanceLoss, downsample, pixel_loss
from grain_pl.metrics.image_quality import ImageQualityMetrics, quantize_like_png
from grain_pl.metrics.lr_fidelity import lr_fidelity
from grain_pl.networks import GRAIN, GrainOutput
from grain_pl.networks.config import build_config
from grain_pl.networks.inference import decoder_forward
from grain_pl.networks.patch_discriminator import PatchDiscriminator
from grain_pl.networks.stylegan2 import StyleGAN2Discriminator
from grain_pl.networks.training_memory import MemoryOptions
from grain_pl.stages.gan_loop import GanLoop, hide_unactionable_warnings
from grain_pl.training.lr_jpeg import LRJpeg, jpeg_lr
from grain_pl.training.optim import build_optimizer
from grain_pl.weights.grain_checkpoint import VERSION_KEY, grain_pl_version, load_prior_into, save_grain
from grain_pl.weights.io import check_state_dict
from grain_pl.weights.stage_checkpoint import read_stage_checkpoint

GRAIN_PARTS = ("encoder", "decoder", "latent_codes", "fusion")
# Frozen networks that come from their own files: never written into stage checkpoints.
FROZEN_PREFIXES = ("grain.generator.", "perceptual.", "identity.")

AdversarialKind = Literal["ragan", "logistic", "wgan"]


class GrainStage(GanLoop):
    trainable_parts: ClassVar[tuple[str, ...]] = ()
    inherited_parts: ClassVar[tuple[str, ...]] = ()
    output_name: ClassVar[str] = "hr_out"
    needs_prior: ClassVar[bool] = True
    default_adversarial: ClassVar[str] = "logistic"
    default_d_every: ClassVar[int] = 3
    default_lr_weight: ClassVar[float] = 0.0
    default_learning_rate: ClassVar[float] = 1e-4
    default_r1_gamma: ClassVar[float] = 10.0

    def __init__(
        self,
        network: str | dict = "paper-1024-lr16",
        network_overrides: dict | None = None,
        prior_path: str | None = None,
        loss_weights: LossWeights | None = None,
        identity_weights: str | None = None,
        lpips_size: int | None = None,
        adversarial: AdversarialKind | None = None,
        adversarial_size: int | None = None,
        d_every: int | None = None,
        r1_gamma: float | None = None,
        r1_every: int = 16,
        learning_rate: float | None = None,
        learning_rate_d: float | None = None,
        optimizer: Literal["adam", "ranger", "radam_lookahead"] = "adam",
        lr_loss_mode: Literal["bilinear", "antialias", "bicubic"] = "bilinear",
        checkpointing: bool = False,
        memory: MemoryOptions | None = None,
        lr_jpeg: LRJpeg | None = None,
        export_path: str | None = None,
        metrics_lpips: bool = True,
        max_iterations: int | None = None,
    ) -> None:
        super().__init__()
        hide_unactionable_warnings()
        self.automatic_optimization = False
        weights = loss_weights or LossWeights(lr=self.default_lr_weight)
        self.loss_weights = weights
        self.adversarial_kind = adversarial or self.default_adversarial
        self.d_every = d_every or self.default_d_every
        self.r1_gamma = self.default_r1_gamma if r1_gamma is None else r1_gamma
        self.r1_every = r1_every
        self.learning_rate = learning_rate or self.default_learning_rate
        self.learning_rate_d = learning_rate_d or self.learning_rate
        self.optimizer_name = optimizer
        self.export_path = export_path
        self.max_iterations = max_iterations
        # plain types only in the hyper-parameters: checkpoints stay loadable with weights_only=True
        memory = memory or MemoryOptions()
        self.save_hyperparameters(ignore=["loss_weights", "memory", "lr_jpeg"])
        self.hparams["loss_weights"] = dataclasses.asdict(weights)
        self.hparams["memory"] = dataclasses.asdict(memory)
        self.hparams["lr_jpeg"] = None if lr_jpeg is None else dataclasses.asdict(lr_jpeg)
        self.memory = memory
        self.lr_jpeg = lr_jpeg
        self.hparams["stage"] = type(self).__name__

        # the one backbone every stage shares
        self.config = build_config(network, network_overrides)
        if weights.lr > 0 and self.config.encoder == "bicubic":
            # The LR guidance trains the encoder, and the fixed bicubic one has nothing to train: its LR is the
            # thumbnail already. Off, rather than a constant term in the total.
            rank_zero_info(f"[{type(self).__name__}] encoder='bicubic' has no parameters: the LR-guidance loss "
                           f"(loss_weights.lr={weights.lr:g}) is off")
            weights = self.loss_weights = dataclasses.replace(weights, lr=0.0)
            self.hparams["loss_weights"] = dataclasses.asdict(weights)
        self.grain = GRAIN(self.config, checkpointing=checkpointing, memory_options=memory)
        # No loss reads y_inv: its image head may run without autograd. Not under hr_parameterisation=
        # "bicubic_residual", where the fusion refines y_inv, so the output's loss reads it.
        if self.output_name != "y_inv" and self.config.hr_parameterisation == "free":
            self.grain.decoder.image_head_grad = memory.y_inv_graph
        prior_discriminator = None
        if prior_path is not None:
            prior_discriminator = load_prior_into(self.grain, prior_path)
            rank_zero_info(f"[{type(self).__name__}] prior: {prior_path} -> grain.generator, latent_avg")
        elif self.needs_prior:
            raise ValueError(
                f"{type(self).__name__} needs a StyleGAN2 prior: set prior_path to a rosinality checkpoint "
                "(e.g. stylegan2-ffhq-config-f.pt for faces) or train one with the `prior` stage "
                "(`grain fit --config conf/stages/prior.yaml`)")
        for name in GRAIN_PARTS:
            if name not in self.trainable_parts:
                getattr(self.grain, name).requires_grad_(False)
        self.freeze_unused()

        # losses (frozen auxiliary networks)
        self.perceptual = PerceptualLoss(resize_to=lpips_size) if weights.lpips > 0 else None
        self.identity = None
        if weights.identity > 0:
            if identity_weights is None:
                raise ValueError(
                    f"loss_weights.identity={weights.identity} needs IR-SE50 weights: download pSp's "
                    "model_ir_se50.pth (pixel2style2pixel README, Google Drive id 1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn) "
                    "and set identity_weights: /path/to/model_ir_se50.pth, or set loss_weights.identity: 0 "
                    "for images that are not faces")
            self.identity = IdentityLoss(identity_weights)
        self.lr_guidance = LRGuidanceLoss(mode=lr_loss_mode)
        self.discriminator = self.build_discriminator(prior_discriminator) if weights.adversarial > 0 else None
        default_size = min(256, self.config.hr_size) if self.adversarial_kind == "ragan" else self.config.hr_size
        self.adversarial_size = adversarial_size or default_size

        self.val_metrics = ImageQualityMetrics(lpips=metrics_lpips)
        self.iteration = 0  # generator-side steps, saved in checkpoints (see max_iterations)
        self.discriminator_steps = 0

    # ----- building -----
    def build_discriminator(self, prior_discriminator: nn.Module | None) -> nn.Module:
        if self.adversarial_kind == "ragan":
            return PatchDiscriminator()
        config = self.config
        discriminator = StyleGAN2Discriminator(config.hr_size, channel_multiplier=config.channel_multiplier,
                                               channel_max=config.generator_channel_max)
        if prior_discriminator is not None:
            discriminator.load_state_dict(prior_discriminator.state_dict())
        else:
            warnings.warn(f"{type(self).__name__}: the prior file has no discriminator ('d'); the StyleGAN2 "
                          "discriminator starts from random weights", stacklevel=2)
        return discriminator

    def check_parts(self, path: str | Path, parts: tuple[str, ...]) -> dict[str, dict[str, torch.Tensor]]:
        """The tensors of `parts` in another stage's checkpoint, checked strictly against this stage
        (CheckpointError naming the file); nothing is loaded."""
        state = read_stage_checkpoint(path)
        tensors = {}
        for part in parts:
            prefix = f"grain.{part}."
            given = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
            expected = getattr(self.grain, part).state_dict()
            if part == "latent_codes" and "latent_avg" not in given:  # the prior file sets it
                given["latent_avg"] = expected["latent_avg"]
            check_state_dict(expected, given, source=path, what=f"grain.{part} of {type(self).__name__}")
            tensors[part] = given
        return tensors

    def load_parts(self, path: str | Path, parts: tuple[str, ...],
                   state: dict[str, dict[str, torch.Tensor]] | None = None) -> None:
        """Start from another stage's checkpoint: exactly the tensors of `parts`, strictly (`state`: what
        `check_parts` returned for them, so the file is not read twice)."""
        if state is None or set(state) != set(parts):
            state = self.check_parts(path, parts)
        for part in parts:
            getattr(self.grain, part).load_state_dict(state[part])
            rank_zero_info(f"[{type(self).__name__}] from {path}: grain.{part} ({len(state[part])} tensors)")
        self.hparams["init_from"] = {"checkpoint": str(path), "parts": list(parts)}

    def freeze_unused(self) -> None:
        """Parameters of trainable parts that this stage's losses cannot reach (a stage may override)."""

    @property
    def frozen_parts(self) -> tuple[str, ...]:
        return tuple(name for name in GRAIN_PARTS if name not in self.trainable_parts)

    def train(self, mode: bool = True) -> GrainStage:
        super().train(mode)
        for name in self.frozen_parts:  # frozen parts are locked in eval mode
            getattr(self.grain, name).eval()
        if "encoder" in self.frozen_parts:
            self.grain.quantize.eval()
        return self

    # ----- the stage's data flow (overridden per stage) -----
    def generate(self, hr: torch.Tensor) -> GrainOutput:
        raise NotImplementedError

    def decoder_input(self, lr: torch.Tensor) -> torch.Tensor:
        """The LR the decoder is given: the quantized LR, or in training steps with `lr_jpeg` a JPEG of it at a
        random quality (grain_pl.training.lr_jpeg); validation and the codec always decode the lossless LR."""
        if self.lr_jpeg is None or not self.training:
            return lr
        return jpeg_lr(lr, self.lr_jpeg)

    def frozen_decoder(self, lr: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """`grain.upscale(lr)` for a stage whose decoder is frozen (called under no_grad): through the inference
        path where `memory.frozen_decoder_inference` allows (same values up to float summation order)."""
        grain = self.grain
        options = grain.decode_options
        if not (self.memory.frozen_decoder_inference and options.enabled and not options.bf16):
            return grain.upscale(lr)
        y_inv, features = decoder_forward(grain.decoder, lr, options)
        y_inv = grain._add_upscale(y_inv.contiguous(), lr)
        return y_inv, {resolution: feature.contiguous() for resolution, feature in features.items()}

    def output_image(self, out: GrainOutput) -> torch.Tensor:
        return getattr(out, self.output_name)

    # ----- losses -----
    def discriminator_fake(self, real: torch.Tensor) -> torch.Tensor:
        return self.output_image(self.generate(real))

    def discriminator_input(self, image: torch.Tensor) -> torch.Tensor:
        if image.shape[-1] == self.adversarial_size:
            return image
        return downsample(image, self.adversarial_size, mode="bilinear")

    def generator_losses(self, out: GrainOutput, hr: torch.Tensor, with_adversarial: bool = True
                         ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = self.output_image(out)
        weights = self.loss_weights
        terms = {"pixel": pixel_loss(image, hr)}
        if self.perceptual is not None:
            terms["lpips"] = self.perceptual(image, hr)
        if self.identity is not None:
            terms["identity"] = self.identity(image, hr)
        if self.discriminator is not None and with_adversarial:
            fake_logits = self.discriminator(self.discriminator_input(image))
            real_logits = None
            if self.adversarial_kind == "ragan":
                with torch.no_grad():
                    real_logits = self.discriminator(self.discriminator_input(hr))
            terms["adversarial"] = generator_adversarial_loss(self.adversarial_kind, real_logits, fake_logits)
        if weights.lr > 0:
            terms["lr"] = self.lr_guidance(out.lr, hr)
        if "adversarial" not in terms:
            weights = dataclasses.replace(weights, adversarial=0.0)
        return weighted_sum(terms, weights)

    # ----- training -----
    def training_step(self, batch: dict, batch_idx: int) -> None:
        hr = batch["hr"]
        optimizers = self.optimizers()
        optimizers = optimizers if isinstance(optimizers, list) else [optimizers]
        if self.discriminator is not None and self.iteration % self.d_every == 0:
            self.discriminator_steps += 1
            # official GRAIN: R1 on the r1_every-th, 2 * r1_every-th, ... discriminator step
            with_r1 = self.r1_gamma > 0 and self.discriminator_steps % self.r1_every == 0
            self.discriminator_step(hr, optimizers[1], with_r1=with_r1)

        optimizer = optimizers[0]
        self.toggle_optimizer(optimizer)
        out = self.generate(hr)
        total, logs = self.generator_losses(out, hr)
        self.optimizer_update(optimizer, total)
        self.untoggle_optimizer(optimizer)
        self.iteration += 1
        self.log_dict({f"train/{name}": value for name, value in logs.items()}, prog_bar=False,
                      batch_size=hr.shape[0], sync_dist=False)
        self.log("train/loss", logs["total"], prog_bar=True, batch_size=hr.shape[0])

    def configure_optimizers(self):
        parameters = [p for name in self.trainable_parts for p in getattr(self.grain, name).parameters()
                      if p.requires_grad]
        optimizers = [build_optimizer(parameters, self.optimizer_name, learning_rate=self.learning_rate)]
        if self.discriminator is not None:
            optimizers.append(build_optimizer(self.discriminator.parameters(), self.optimizer_name,
                                              learning_rate=self.learning_rate_d))
        return optimizers

    # ----- validation -----
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        hr = batch["hr"]
        out = self.generate(hr)
        image = self.output_image(out)
        _, logs = self.generator_losses(out, hr, with_adversarial=False)
        self.log_dict({f"val/{name}": value for name, value in logs.items()}, batch_size=hr.shape[0], sync_dist=True)
        self.val_metrics.update(quantize_like_png(image), hr)
        # Is the LR, as its PNG holds it, still a thumbnail? grain evaluate's lr_psnr / lr_ssim, averaged per image.
        lr_values = lr_fidelity(to_uint8(out.lr), to_uint8(hr))
        self.log_dict({f"val/{name}": value.mean() for name, value in lr_values.items() if value is not None},
                      batch_size=hr.shape[0], sync_dist=True)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict({f"val/{name}": value for name, value in values.items()}, sync_dist=False)
        self.val_metrics.reset()

    @torch.no_grad()
    def sample_images(self, batch: dict) -> dict[str, torch.Tensor]:
        """Images for the sample grids: HR | LR | y_inv | prior image | final (what this stage produces)."""
        out = self.generate(batch["hr"])
        images = {"hr": batch["hr"], "lr": out.lr, "y_inv": out.y_inv}
        if out.prior_image is not None:
            images["prior_image"] = out.prior_image
        if out.hr_out is not None:
            images["hr_out"] = out.hr_out
        return images

    # ----- checkpoints -----
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [key for key in state if key.startswith(FROZEN_PREFIXES)]:
            del state[key]
        checkpoint["grain_pl"] = {"iteration": self.iteration, "discriminator_steps": self.discriminator_steps,
                                  "config": self.config.as_dict(), VERSION_KEY: grain_pl_version()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key, value in self.state_dict().items():  # frozen parts come from their own files
            if key.startswith(FROZEN_PREFIXES):
                state.setdefault(key, value)
        extra = checkpoint.get("grain_pl", {})
        self.iteration = int(extra.get("iteration", 0))
        self.discriminator_steps = int(extra.get("discriminator_steps", 0))

    def on_fit_start(self) -> None:
        super().on_fit_start()  # refuses plain DDP
        if self.export_path and Path(self.export_path).exists():
            raise FileExistsError(f"{self.export_path}: the export file already exists; move it or choose "
                                  "another export_path (nothing was trained)")

    def on_train_end(self) -> None:
        if self.export_path and self.trainer.is_global_zero:
            save_grain(self.grain, self.export_path, stage=type(self).__name__)
            rank_zero_info(f"[{type(self).__name__}] exported the model to {self.export_path}")
