"""A real multi-process DDP fit of one tiny GRAIN stage (or the prior stage) on the CPU (gloo), for
tests/stages/test_ddp.py.

Run as a script (never imported by pytest): Lightning's DDP launcher starts the other ranks by re-running this
file with the same arguments, which keeps the pytest process itself out of forking and spawning. Every rank
writes `<out_dir>/rank<global_rank>.pt` with the trained parameters before and after the fit, the discriminator's
buffers (BatchNorm running statistics), its loop counters and a fingerprint of every batch it trained on; the
test compares the ranks.

    python tests/stages/ddp_fit_script.py --stage stage1 --image-dir IMAGES --out-dir OUT
    python tests/stages/ddp_fit_script.py --stage stage1 ... --accelerator gpu --sync-batchnorm  # GPUs only
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytorch_lightning as pl
import torch

from grain_pl.data import GrainDataModule
from grain_pl.losses import LossWeights
from grain_pl.stages import FinalStage, PriorStage, Stage1, Stage2, Stage3
from grain_pl.stages.base import GrainStage

PRESET = "tiny-32-lr8"
STAGES: dict[str, type[GrainStage]] = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3, "final": FinalStage}


class TrainingRecord(pl.Callback):
    """What one rank did: a checksum of every training batch (the ranks must train on different images), the
    optimizer steps after every iteration (G, D and R1 steps all count: the D / R1 schedule), and how many
    SyncBatchNorm layers the trained module had (Lightning converts them back at teardown)."""

    def __init__(self) -> None:
        self.fingerprints: list[float] = []
        self.optimizer_steps: list[int] = []
        self.sync_batchnorm_layers = 0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.sync_batchnorm_layers = sum(isinstance(module, torch.nn.SyncBatchNorm) for module in pl_module.modules())

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: dict,
                             batch_idx: int) -> None:
        self.fingerprints.append(float(batch["hr"].double().sum()))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: object, batch: dict,
                           batch_idx: int) -> None:
        self.optimizer_steps.append(trainer.global_step)


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=[*sorted(STAGES), "prior"], required=True)
    parser.add_argument("--image-dir", required=True)
    parser.add_argument("--prior", default=None, help="StyleGAN2 prior file (every stage but stage1)")
    parser.add_argument("--out-dir", required=True)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu",
                        help="Lightning's DDP picks the backend: gloo on cpu, nccl on gpu")
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--strategy", default="ddp_find_unused_parameters_true",
                        choices=["ddp_find_unused_parameters_true", "ddp"], help="the Trainer's strategy string")
    parser.add_argument("--sync-batchnorm", action="store_true")
    parser.add_argument("--max-iterations", type=int, default=4)
    parser.add_argument("--d-every", type=int, default=2)
    parser.add_argument("--r1-every", type=int, default=2)
    parser.add_argument("--r1-gamma", type=float, default=None)
    parser.add_argument("--checkpointing", action="store_true")
    return parser.parse_args()


def trained_parameter_names(stage: pl.LightningModule) -> list[str]:
    return [name for name, parameter in stage.named_parameters() if parameter.requires_grad]


def main() -> None:
    arguments = parse_arguments()
    # Same seed on every rank: identical initial weights (DDP also broadcasts rank 0's at wrap time).
    pl.seed_everything(0, workers=True)
    if arguments.stage == "prior":  # a tiny StyleGAN2 at the images' 32x32 (d_every does not apply: D every step)
        stage = PriorStage(size=32, style_dim=32, n_mlp=2, channel_max=16, r1_every=arguments.r1_every,
                           r1_gamma=10.0 if arguments.r1_gamma is None else arguments.r1_gamma,
                           max_iterations=arguments.max_iterations)
    else:
        weights = LossWeights(identity=0.0, lr=0.1 if arguments.stage in ("stage1", "final") else 0.0)
        stage = STAGES[arguments.stage](
            network=PRESET, prior_path=arguments.prior, loss_weights=weights, d_every=arguments.d_every,
            r1_every=arguments.r1_every, r1_gamma=arguments.r1_gamma, max_iterations=arguments.max_iterations,
            checkpointing=arguments.checkpointing, metrics_lpips=False)
    names = trained_parameter_names(stage)
    parameters = dict(stage.named_parameters())
    initial = {name: parameters[name].detach().clone() for name in names}

    datamodule = GrainDataModule(data_dir=arguments.image_dir, image_size=32, split="folder", test_fraction=0.25,
                                 batch_size=2, num_workers=0)
    record = TrainingRecord()
    trainer = pl.Trainer(accelerator=arguments.accelerator, devices=arguments.devices, num_nodes=1,
                         strategy=arguments.strategy,
                         sync_batchnorm=arguments.sync_batchnorm, max_epochs=-1, max_steps=-1, limit_val_batches=0,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[record],
                         default_root_dir=arguments.out_dir)
    trainer.fit(stage, datamodule=datamodule)

    parameters = dict(stage.named_parameters())
    buffers = {} if stage.discriminator is None else {
        name: value.detach().clone() for name, value in stage.discriminator.named_buffers()}
    result = {
        "initial": initial,
        "final": {name: parameters[name].detach().cpu().clone() for name in names},
        "discriminator_buffers": {name: value.cpu() for name, value in buffers.items()},
        "iteration": stage.iteration,
        "discriminator_steps": getattr(stage, "discriminator_steps", None),  # PriorStage: one D step an iteration
        "fingerprints": record.fingerprints,
        "optimizer_steps": record.optimizer_steps,
        "world_size": trainer.world_size,
        "process_group_backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "sync_batchnorm_layers": record.sync_batchnorm_layers,
    }
    out_dir = Path(arguments.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save(result, out_dir / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
