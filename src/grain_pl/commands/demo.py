"""The embedded default: `make demo` (or `python -m grain_pl.commands.demo`) trains the whole GRAIN chain on real photos
that an installed package ships, then evaluates it against the baselines, with nothing from outside.

Data: scikit-image's colour photos. Random crops (at random scales) of the training photos make the training
set; whole photos are held out (`chelsea`, `coffee`) and crops of them make the test set, so no test pixel was
ever seen in training. Then, within a time budget (`--minutes`, split between the stages by the recipe):

    prior (a StyleGAN2 at the demo size) -> stage1 -> stage2 -> stage3 -> final -> grain evaluate

Everything lands in one run folder (`runs/demo`, or `runs/demo-1`, ... if that exists: nothing is overwritten):
data/, one folder per stage (checkpoints, sample grids, the W&B offline run), model.safetensors (the final
model), eval/ (per-image CSV, summary.json, rate-distortion plot), comparison.png and metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
from PIL import Image

TRAIN_PHOTOS = ("astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "retina",
                "immunohistochemistry")
HELD_OUT_PHOTOS = ("chelsea", "coffee")
STAGES = ("prior", "stage1", "stage2", "stage3", "final")


def load_photo(name: str) -> np.ndarray:
    """A uint8 RGB photo shipped inside the scikit-image wheel (no download)."""
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(skimage.data, name)()


def random_crops(photo: np.ndarray, size: int, count: int, rng: np.random.Generator,
                 min_scale: float = 0.25) -> list[Image.Image]:
    """Crops of `size` px after resizing the photo by a random factor (antialiased, Pillow), so a crop shows
    anything from fine texture to a good part of the scene."""
    image = Image.fromarray(photo)
    short = min(image.size)
    crops = []
    for _ in range(count):
        scale = math.exp(rng.uniform(math.log(max(min_scale, size / short)), 0.0))
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        resized = image.resize((width, height), Image.LANCZOS)
        left, top = rng.integers(0, width - size + 1), rng.integers(0, height - size + 1)
        crops.append(resized.crop((int(left), int(top), int(left) + size, int(top) + size)))
    return crops


def prepare_data(root: Path, size: int, train_crops: int, test_crops: int, seed: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(seed)
    train_dir, test_dir = root / "train", root / "test"
    for folder, photos, count in ((train_dir, TRAIN_PHOTOS, train_crops), (test_dir, HELD_OUT_PHOTOS, test_crops)):
        folder.mkdir(parents=True, exist_ok=True)
        per_photo = math.ceil(count / len(photos))
        for name in photos:
            for index, crop in enumerate(random_crops(load_photo(name), size, per_photo, rng)):
                crop.save(folder / f"{name}_{index:04d}.png")
    return train_dir, test_dir


@dataclass
class DemoRecipe:
    """The demo's training recipe; `share` splits the time budget between the stages."""

    preset: str = "demo-64-lr8"
    batch_size: int = 16
    share: dict[str, float] = field(default_factory=lambda: {
        "prior": 0.10, "stage1": 0.40, "stage2": 0.10, "stage3": 0.15, "final": 0.25})
    # peak learning rates; each GRAIN stage decays its own to 0 over its time (cosine)
    learning_rate: dict[str, float] = field(default_factory=lambda: {
        "prior": 2e-3, "stage1": 2e-3, "stage2": 2e-3, "stage3": 2e-3, "final": 5e-4})
    # minutes of CPU favour the pixel loss: LPIPS at 0.1 (the paper: 0.8) reached bicubic's PSNR in 3 minutes
    # of stage 1 where 0.8 stayed 2 dB below; no GAN (its discriminator steps cost what they would teach)
    lpips: float = 0.1
    adversarial: float = 0.0
    lr_weight: float = 0.1
    train_crops: int = 4000
    test_crops: int = 64
    evaluation_minutes: float = 0.5  # reserved out of the budget for the evaluation (about 10 s at 64 px)

    def stage_seconds(self, stage: str, seconds_left: float) -> float:
        """This stage's part of what is left of the training budget (set-up costs come out of the budget)."""
        remaining = STAGES[STAGES.index(stage):]
        return max(seconds_left, 10.0) * self.share[stage] / sum(self.share[name] for name in remaining)


class CosineOverTime(pl.Callback):
    """Decays every optimizer's learning rate from its peak to 0 along a cosine over the stage's time budget
    (the demo's stages are limited by time, not by a number of steps)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()
        self.peaks = [[group["lr"] for group in optimizer.param_groups] for optimizer in trainer.optimizers]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        progress = min((time.perf_counter() - self.start) / self.seconds, 1.0)
        factor = 0.5 * (1 + math.cos(math.pi * progress))
        for optimizer, peaks in zip(trainer.optimizers, self.peaks):
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = peak * factor


def next_free(path: Path) -> Path:
    if not path.exists():
        return path
    index = 1
    while path.with_name(f"{path.name}-{index}").exists():
        index += 1
    return path.with_name(f"{path.name}-{index}")


def _trainer(stage_dir: Path, seconds: float, name: str):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from grain_pl.training import LogImageGrid
    from grain_pl.training.loggers import GrainWandbLogger

    callbacks = [ModelCheckpoint(dirpath=stage_dir / "checkpoints", save_last=True, save_top_k=0)]
    if name != "prior":
        callbacks += [LogImageGrid(every_n_steps=200, max_images=4), CosineOverTime(seconds)]
    return pl.Trainer(
        accelerator="auto", devices=1, max_time=timedelta(seconds=seconds), max_epochs=-1, max_steps=-1,
        default_root_dir=str(stage_dir), logger=GrainWandbLogger(save_dir=str(stage_dir), name=f"demo-{name}"),
        callbacks=callbacks, limit_val_batches=1, val_check_interval=200, check_val_every_n_epoch=None,
        log_every_n_steps=20, enable_model_summary=False, num_sanity_val_steps=0)


def run_demo(output: Path, minutes: float = 14.0, recipe: DemoRecipe | None = None, seed: int = 0) -> dict:
    import torch

    from grain_pl.codec import GrainModule
    from grain_pl.data import GrainDataModule
    from grain_pl.evaluation import evaluate_folder
    from grain_pl.losses import LossWeights
    from grain_pl.networks import get_preset
    from grain_pl.stages import FinalStage, PriorStage, Stage1, Stage2, Stage3
    from grain_pl.training import InitFromStage

    started = time.perf_counter()
    recipe = recipe or DemoRecipe()
    config = get_preset(recipe.preset)
    output = next_free(Path(output))
    output.mkdir(parents=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    pl.seed_everything(seed, workers=True)
    train_dir, test_dir = prepare_data(output / "data", config.hr_size, recipe.train_crops, recipe.test_crops, seed)
    training_deadline = started + (minutes - recipe.evaluation_minutes) * 60
    print(f"grain demo: {output} | {recipe.preset} | {minutes:g} min | time shares " +
          ", ".join(f"{stage} {recipe.share[stage]:.0%}" for stage in STAGES), flush=True)

    def datamodule() -> GrainDataModule:
        return GrainDataModule(data_dir=str(train_dir), image_size=config.hr_size, split="folder",
                               test_fraction=0.02, seed=seed, hflip=True, batch_size=recipe.batch_size,
                               num_workers=0)

    timings: dict[str, float] = {}
    prior_path = output / "prior" / "stylegan2.pt"
    stage_classes = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3, "final": FinalStage}
    previous = None
    for stage_name in STAGES:
        stage_dir = output / stage_name
        begin = time.perf_counter()
        trainer = _trainer(stage_dir, recipe.stage_seconds(stage_name, training_deadline - begin), stage_name)
        if stage_name == "prior":
            module = PriorStage(size=config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                channel_multiplier=config.channel_multiplier,
                                channel_max=config.generator_channel_max,
                                learning_rate=recipe.learning_rate["prior"], export_path=str(prior_path),
                                sample_every_n_steps=200)
        else:
            weights = LossWeights(pixel=1.0, lpips=recipe.lpips, identity=0.0, adversarial=recipe.adversarial,
                                  lr=recipe.lr_weight if stage_name in ("stage1", "final") else 0.0)
            module = stage_classes[stage_name](
                network=recipe.preset, prior_path=None if stage_name == "stage1" else str(prior_path),
                loss_weights=weights, learning_rate=recipe.learning_rate[stage_name],
                export_path=str(output / "model.safetensors") if stage_name == "final" else None)
            if previous is not None:
                trainer.callbacks.append(InitFromStage(str(previous)))
        trainer.fit(module, datamodule=datamodule())
        # A full checkpoint (optimizer state included) so that a stage can also be resumed with `grain fit`.
        trainer.save_checkpoint(stage_dir / "checkpoints" / "final.ckpt", weights_only=False)
        previous = stage_dir / "checkpoints" / "final.ckpt"
        timings[stage_name] = time.perf_counter() - begin
        if trainer.logger is not None and hasattr(trainer.logger, "experiment"):
            import wandb

            wandb.finish()

    begin = time.perf_counter()
    model = GrainModule.from_checkpoint(output / "model.safetensors")
    summary = evaluate_folder(model, test_dir, output / "eval")
    timings["evaluate"] = time.perf_counter() - begin
    save_comparison(model, test_dir, output / "comparison.png")
    metrics = {"run": str(output), "preset": recipe.preset, "minutes_budget": minutes,
               "wall_seconds": time.perf_counter() - started, "stage_seconds": timings,
               "recipe": dataclasses.asdict(recipe), "test_images": len(list(test_dir.glob("*.png"))),
               "summary": summary, "torch_threads": torch.get_num_threads()}
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    print_table(summary)
    print(f"grain demo: done in {metrics['wall_seconds'] / 60:.1f} min -> {output}", flush=True)
    return metrics


def save_comparison(model, test_dir: Path, path: Path, count: int = 6) -> None:
    """HR | LR (nearest, enlarged) | bicubic from the LR size | GRAIN, one row per held-out crop."""
    import torch
    import torch.nn.functional as F
    from torchvision.utils import save_image

    from grain_pl.io.images import from_uint8, to_uint8

    files = sorted(test_dir.glob("*.png"))[:: max(1, len(list(test_dir.glob("*.png"))) // count)][:count]
    hr = torch.stack([from_uint8(torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1))
                      for f in files])
    lr = model.encode(hr)
    size = hr.shape[-1]
    small = F.interpolate(hr, size=lr.shape[-1], mode="bicubic", antialias=True, align_corners=False)
    bicubic = F.interpolate(from_uint8(to_uint8(small)), size=size, mode="bicubic", align_corners=False)
    columns = [hr, F.interpolate(lr, size=size, mode="nearest"), bicubic.clamp(-1, 1), model.decode(lr)]
    grid = torch.stack(columns, dim=1).flatten(0, 1)
    save_image((grid + 1) / 2, path, nrow=len(columns), padding=2)


def print_table(summary: dict) -> None:
    methods = summary.get("methods", summary)
    print("| method | bytes | PSNR | SSIM | LPIPS |")
    print("|---|---|---|---|---|")
    for name, values in methods.items():
        if isinstance(values, dict) and "psnr" in values:
            print(f"| {name} | {values.get('bytes', float('nan')):.0f} | {values['psnr']:.2f} | "
                  f"{values.get('ssim', float('nan')):.4f} | {values.get('lpips', float('nan')):.4f} |")


def add_demo_command(subparsers) -> argparse.ArgumentParser:
    """Add `demo` to the `grain` command's subparsers."""
    demo = subparsers.add_parser("demo", help="the embedded default: train the whole chain on bundled photos",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--minutes", type=float, default=float(os.environ.get("DEMO_MINUTES", 14)),
                      help="the whole run's time budget (training + evaluation)")
    demo.add_argument("--output", type=Path, default=Path("runs/demo"))
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_run_demo)
    return demo


def _run_demo(args: argparse.Namespace) -> str:
    metrics = run_demo(args.output, args.minutes, seed=args.seed)
    return f"grain demo: results in {metrics['run']}"
