"""How faithful is GRAIN's LR as a thumbnail, and what does fidelity cost the HR? (issue 9, the demo preset)

Trains the demo's stages for a fixed number of iterations (seeded, so the figures do not depend on the machine's
speed or load) on the demo's training crops and scores the 64 held-out crops (`grain_pl.commands.demo`):

- lr_psnr: the stored LR (rounded to 8 bits) against the reference thumbnail of the HR, the antialiased bicubic
  downscale of the 8-bit HR, rounded (`F.interpolate(hr_0_255, size=lr, mode="bicubic", antialias=True,
  align_corners=False).round().clamp(0, 255)`, the bicubic baseline's LR in `grain evaluate`); per image, capped
  at 100 dB, then averaged.
- psnr, lpips: the 8-bit HR decoded from that LR against the HR crop, per image then averaged, as `grain evaluate`
  does (PSNR over RGB, LPIPS AlexNet v0.1 at the full size). After stage 1 alone the HR is the rescaling
  module's `y_inv`; after the chain it is the final image.
- bicubic: `grain evaluate`'s bicubic baseline on the same crops, for reference.

Each variant is one setting of the levers (the encoder's `lr_parameterisation`, the LR-guidance weight and its
target per stage, learning rates, iterations). Results are appended to `<work>/results.jsonl`; a markdown table
of every result in that file is printed at the end, and `<work>/<run>/thumbnails.png` shows, for 8 held-out
crops: HR | the stored LR (nearest, enlarged) | the reference thumbnail (nearest, enlarged) | decoded HR.

    PYTHONPATH=src python benchmarks/lr_fidelity_sweep.py --variants paper free-bicubic-1 residual-1 \
        --stage1-iterations 300                               # stage 1 alone: rank the levers
    PYTHONPATH=src python benchmarks/lr_fidelity_sweep.py --variants residual-1 --chain \
        --prior-iterations 400 --stage1-iterations 500 --stage2-iterations 100 --stage3-iterations 150 \
        --final-iterations 150                                # the whole chain at the demo's budget
    PYTHONPATH=src python benchmarks/lr_fidelity_sweep.py --table  # only print the table of what was measured

The prior (for --chain) and each stage-1 result are cached under `<work>` and reused by later runs with the same
settings, so a final-stage variation does not retrain stage 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch

PRESET = "demo-64-lr8"


@dataclass(frozen=True)
class Variant:
    """One setting of the levers. `final_*` fields of None copy stage 1's."""

    parameterisation: str = "free"
    hr_parameterisation: str = "free"
    lr_weight: float = 0.1
    lr_mode: str = "bilinear"
    final_lr_weight: float | None = None
    final_lr_mode: str | None = None
    lpips: float = 0.1
    learning_rate: float = 2e-3
    final_learning_rate: float = 5e-4


VARIANTS: dict[str, Variant] = {
    # today's demo: the paper's encoder and LR guidance (0.1, aliased bilinear target)
    "paper": Variant(),
    "free-bicubic-1": Variant(lr_weight=1.0, lr_mode="bicubic"),
    "free-bicubic-10": Variant(lr_weight=10.0, lr_mode="bicubic"),
    # the thumbnail plus a learned correction
    "residual-0": Variant("bicubic_residual", lr_weight=0.0, lr_mode="bicubic"),
    "residual-0.1": Variant("bicubic_residual", lr_weight=0.1, lr_mode="bicubic"),
    "residual-1": Variant("bicubic_residual", lr_weight=1.0, lr_mode="bicubic"),
    "residual-3": Variant("bicubic_residual", lr_weight=3.0, lr_mode="bicubic"),
    "residual-10": Variant("bicubic_residual", lr_weight=10.0, lr_mode="bicubic"),
    "residual-1-bilinear": Variant("bicubic_residual", lr_weight=1.0, lr_mode="bilinear"),
    # ... and the HR as a correction of the LR's bicubic upscale
    "residual-1-hr": Variant("bicubic_residual", "bicubic_residual", lr_weight=1.0, lr_mode="bicubic"),
    "residual-0.1-hr": Variant("bicubic_residual", "bicubic_residual", lr_weight=0.1, lr_mode="bicubic"),
    "residual-0-hr": Variant("bicubic_residual", "bicubic_residual", lr_weight=0.0, lr_mode="bicubic"),
    "residual-0.1-hr-final-1": Variant("bicubic_residual", "bicubic_residual", lr_weight=0.1, lr_mode="bicubic",
                                       final_lr_weight=1.0),
    "residual-0.1-hr-final-1-lpips0.03": Variant("bicubic_residual", "bicubic_residual", lr_weight=0.1,
                                                 lr_mode="bicubic", final_lr_weight=1.0, lpips=0.03),
    "free-0.1-hr": Variant(hr_parameterisation="bicubic_residual"),
    # how the final stage treats the LR (it fine-tunes the encoder end to end)
    "residual-1-final-0": Variant("bicubic_residual", lr_weight=1.0, lr_mode="bicubic", final_lr_weight=0.0),
    "residual-1-final-10": Variant("bicubic_residual", lr_weight=1.0, lr_mode="bicubic", final_lr_weight=10.0),
    "residual-3-final-10": Variant("bicubic_residual", lr_weight=3.0, lr_mode="bicubic", final_lr_weight=10.0),
}


class CosineOverIterations(pl.Callback):
    """Every optimizer's learning rate from its peak to 0 along a cosine over the stage's `max_iterations`."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.peaks = [[group["lr"] for group in optimizer.param_groups] for optimizer in trainer.optimizers]

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx) -> None:
        factor = 0.5 * (1 + math.cos(math.pi * min(pl_module.iteration / pl_module.max_iterations, 1.0)))
        for optimizer, peaks in zip(trainer.optimizers, self.peaks):
            for group, peak in zip(optimizer.param_groups, peaks):
                group["lr"] = peak * factor


class TrainingTime(pl.Callback):
    """Seconds from the first to the last training batch (set-up and data scanning excluded)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def _key(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _fit(module: pl.LightningModule, train_dir: Path, args: argparse.Namespace) -> dict:
    """Train `module` for its max_iterations; returns iterations, seconds and iterations per second."""
    from grain_pl.data import GrainDataModule

    datamodule = GrainDataModule(data_dir=str(train_dir), image_size=64, split="folder", test_fraction=0.02,
                                 seed=args.seed, hflip=True, batch_size=args.batch_size, num_workers=0,
                                 check_files="none")  # freshly written crops
    clock = TrainingTime()
    callbacks = [clock] if module.__class__.__name__ == "PriorStage" else [clock, CosineOverIterations()]
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=-1, max_steps=-1, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, num_sanity_val_steps=0, callbacks=callbacks)
    begin = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return {"iterations": module.iteration, "seconds": round(time.perf_counter() - begin, 1),
            "training_seconds": round(clock.seconds, 1), "it_per_s": round(module.iteration / clock.seconds, 3)}


def _stage(stage_class, variant: Variant, stage: str, iterations: int, prior_path: Path | None):
    from grain_pl.losses import LossWeights

    final = stage == "final"
    lr_weight = variant.final_lr_weight if final and variant.final_lr_weight is not None else variant.lr_weight
    lr_mode = variant.final_lr_mode if final and variant.final_lr_mode is not None else variant.lr_mode
    weights = LossWeights(pixel=1.0, lpips=variant.lpips, identity=0.0, adversarial=0.0,
                          lr=lr_weight if stage in ("stage1", "final") else 0.0)
    return stage_class(network=PRESET, network_overrides={"lr_parameterisation": variant.parameterisation,
                                                        "hr_parameterisation": variant.hr_parameterisation},
                       prior_path=None if prior_path is None else str(prior_path), loss_weights=weights,
                       lr_loss_mode=lr_mode, metrics_lpips=False, max_iterations=iterations,
                       learning_rate=variant.final_learning_rate if final else variant.learning_rate)


def _inherit(stage, previous) -> None:
    for part in stage.inherited_parts:
        getattr(stage.grain, part).load_state_dict(getattr(previous.grain, part).state_dict())


def _prior(work: Path, train_dir: Path, args: argparse.Namespace) -> tuple[Path, dict | None]:
    from grain_pl.networks import get_preset
    from grain_pl.stages import PriorStage

    path = work / "cache" / f"prior-{_key(args.prior_iterations, args.seed, args.batch_size)}.pt"
    if path.exists():
        return path, None
    path.parent.mkdir(parents=True, exist_ok=True)
    config = get_preset(PRESET)
    pl.seed_everything(args.seed, workers=True)
    module = PriorStage(size=config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                        channel_multiplier=config.channel_multiplier, channel_max=config.generator_channel_max,
                        learning_rate=2e-3, export_path=str(path),
                        max_iterations=args.prior_iterations)
    return path, _fit(module, train_dir, args)


def run_variant(name: str, variant: Variant, work: Path, train_dir: Path, test_dir: Path,
                args: argparse.Namespace) -> dict:
    from grain_pl.stages import FinalStage, Stage1, Stage2, Stage3

    timing: dict[str, dict] = {}
    prior_path = None
    if args.chain:
        prior_path, prior_timing = _prior(work, train_dir, args)
        if prior_timing:
            timing["prior"] = prior_timing

    stage1_fields = {k: v for k, v in dataclasses.asdict(variant).items() if not k.startswith("final_")}
    cached = work / "cache" / f"stage1-{_key(stage1_fields, args.stage1_iterations, args.seed, args.batch_size)}.pt"
    pl.seed_everything(args.seed, workers=True)
    module = _stage(Stage1, variant, "stage1", args.stage1_iterations, None)
    if cached.exists():
        module.grain.load_state_dict(torch.load(cached, weights_only=True))
    else:
        timing["stage1"] = _fit(module, train_dir, args)
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.save(module.grain.state_dict(), cached)
    output = "y_inv"
    run_dir = work / f"{name}-stage1-{args.stage1_iterations}"
    intermediate = {}
    if args.chain:
        run_dir = work / (f"{name}-chain-{args.prior_iterations}-{args.stage1_iterations}-{args.stage2_iterations}-"
                          f"{args.stage3_iterations}-{args.final_iterations}")
        intermediate["stage1"] = score(module.grain, test_dir, "y_inv", run_dir / "thumbnails-stage1.png")
        chain = (("stage2", Stage2, args.stage2_iterations), ("stage3", Stage3, args.stage3_iterations),
                 ("final", FinalStage, args.final_iterations))
        for stage_name, stage_class, iterations in chain:
            pl.seed_everything(args.seed, workers=True)
            stage = _stage(stage_class, variant, stage_name, iterations, prior_path)
            _inherit(stage, module)
            timing[stage_name] = _fit(stage, train_dir, args)
            module = stage
            if stage_name == "stage3":  # what the final stage starts from
                intermediate["stage3"] = score(module.grain, test_dir, "hr_out", run_dir / "thumbnails-stage3.png")
        output = "hr_out"

    scores = score(module.grain, test_dir, output, run_dir / "thumbnails.png")
    iterations = {"stage1": args.stage1_iterations}
    if args.chain:
        iterations.update(prior=args.prior_iterations, stage2=args.stage2_iterations,
                          stage3=args.stage3_iterations, final=args.final_iterations)
    return {"variant": name, "settings": dataclasses.asdict(variant), "chain": args.chain, "output": output,
            "iterations": iterations, "timing": timing, "batch_size": args.batch_size, "seed": args.seed,
            "torch_threads": torch.get_num_threads(), "intermediate": intermediate, **scores}


@torch.no_grad()
def score(grain, test_dir: Path, output: str, picture: Path) -> dict:
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image
    from torchvision.utils import save_image

    from grain_pl.evaluation import PSNR_CAP_DB, decode_image_bytes, resize_baseline
    from grain_pl.io.images import from_uint8, to_uint8
    from grain_pl.losses import PerceptualLoss

    files = sorted(test_dir.glob("*.png"))
    hr_levels = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))).permute(2, 0, 1)
                             for f in files])
    hr = from_uint8(hr_levels)
    grain.eval()
    lr_size = grain.config.lr_size
    lr_levels = to_uint8(grain.encode(hr))  # eval mode: rounded, exactly the stored PNG's levels
    lr = from_uint8(lr_levels)
    decoded = getattr(grain.decode(lr), output)
    out_levels = to_uint8(decoded)
    # the bicubic baseline of `grain evaluate`: its stored LR (the reference thumbnail) and its upscaled HR
    baselines = [resize_baseline(image, lr_size, "bicubic") for image in hr_levels]
    reference = torch.stack([decode_image_bytes(baseline.payload) for baseline in baselines])
    bicubic = torch.stack([baseline.output for baseline in baselines])

    def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        mse = (a.float() - b.float()).square().mean(dim=(1, 2, 3))
        return (10 * torch.log10(255.0**2 / mse)).clamp(max=PSNR_CAP_DB)

    perceptual = PerceptualLoss(resize_to=None, reduction="none")
    picture.parent.mkdir(parents=True, exist_ok=True)
    shown = slice(0, len(files), max(1, len(files) // 8))
    enlarge = lambda levels: F.interpolate(from_uint8(levels[shown]), size=hr.shape[-1], mode="nearest")  # noqa: E731
    columns = [hr[shown], enlarge(lr_levels), enlarge(reference), from_uint8(out_levels[shown])]
    save_image((torch.stack(columns, 1).flatten(0, 1) + 1) / 2, picture, nrow=len(columns), padding=2)
    return {
        "lr_psnr": psnr(lr_levels, reference).mean().item(),
        "psnr": psnr(out_levels, hr_levels).mean().item(),
        "lpips": perceptual(from_uint8(out_levels), hr).mean().item(),
        "bicubic_psnr": psnr(bicubic, hr_levels).mean().item(),
        "bicubic_lpips": perceptual(from_uint8(bicubic), hr).mean().item(),
        "test_images": len(files), "thumbnails": str(picture),
    }


def table(results: list[dict]) -> str:
    lines = ["| variant | LR / HR parameterisation | LR weight, target (stage 1 / final) | LPIPS weight | iterations "
             "| lr_psnr | PSNR | LPIPS | after stage 1 (y_inv); stage 3: lr_psnr / PSNR / LPIPS "
             "| bicubic PSNR / LPIPS | train it/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        settings = result["settings"]
        stage1 = f"{settings['lr_weight']:g} {settings['lr_mode']}"
        if result["chain"]:
            final_weight = settings["final_lr_weight"]
            final_mode = settings["final_lr_mode"] or settings["lr_mode"]
            stage1 += f" / {settings['lr_weight'] if final_weight is None else final_weight:g} {final_mode}"
        order = ("prior", "stage1", "stage2", "stage3", "final")
        iterations = "/".join(str(result["iterations"][s]) for s in order if s in result["iterations"])
        steps = "; ".join(f"{stage} {v['lr_psnr']:.1f} / {v['psnr']:.2f} / {v['lpips']:.3f}"
                          for stage, v in result.get("intermediate", {}).items()) or "-"
        speed = ", ".join(f"{s} {t['it_per_s']:.2f}" for s, t in result["timing"].items())
        parameterisation = f"{settings['parameterisation']} / {settings.get('hr_parameterisation', 'free')}"
        lpips = settings.get("lpips", 0.1)
        lines.append(f"| {result['variant']} | {parameterisation} | {stage1} | {lpips:g} | {iterations} | "
                     f"{result['lr_psnr']:.2f} | {result['psnr']:.2f} | {result['lpips']:.3f} | {steps} | "
                     f"{result['bicubic_psnr']:.2f} / {result['bicubic_lpips']:.3f} | {speed or 'cached'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=[], choices=sorted(VARIANTS))
    parser.add_argument("--work", type=Path, default=Path("runs/lr_fidelity"))
    parser.add_argument("--chain", action="store_true", help="prior + stage1..final (default: stage 1 alone)")
    parser.add_argument("--prior-iterations", type=int, default=400)
    parser.add_argument("--stage1-iterations", type=int, default=300)
    parser.add_argument("--stage2-iterations", type=int, default=100)
    parser.add_argument("--stage3-iterations", type=int, default=150)
    parser.add_argument("--final-iterations", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 on a shared machine (2 threads on 2 busy cores ran 5-10x slower)")
    parser.add_argument("--table", action="store_true", help="only print the table of <work>/results.jsonl")
    args = parser.parse_args()

    results_path = args.work / "results.jsonl"
    torch.set_num_threads(args.threads)
    if not args.table:
        from grain_pl.commands.demo import prepare_data

        os.environ.setdefault("WANDB_MODE", "disabled")
        data = args.work / f"data-seed{args.seed}"
        if len(list((data / "test").glob("*.png"))) < 64:  # the demo's crops: 4000 training, 64 held out
            prepare_data(data, 64, 4000, 64, args.seed)
        for name in args.variants:
            result = run_variant(name, VARIANTS[name], args.work, data / "train", data / "test", args)
            with results_path.open("a") as file:
                file.write(json.dumps(result) + "\n")
            print(table([result]).splitlines()[-1], flush=True)
    if results_path.exists():
        print(table([json.loads(line) for line in results_path.read_text().splitlines() if line.strip()]))


if __name__ == "__main__":
    main()
