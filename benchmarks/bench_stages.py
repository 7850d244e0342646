"""Training-step time and peak memory of the GRAIN stages, measured inside real Lightning fits.

    python benchmarks/bench_stages.py --preset tiny-64-lr8 --stages stage1 stage2 stage3 final --iterations 8
    python benchmarks/bench_stages.py --preset cat-256-lr16 --iterations 4
    python benchmarks/bench_stages.py --preset paper-1024-lr16 --stages final --iterations 2 --checkpointing both
    python benchmarks/bench_stages.py --preset cat-256-lr16 --stages stage3 --frozen-grad both

Each measurement is a fresh process running `Trainer.fit` on random images with a random-weight prior of the
preset's size (the weights do not change the cost). A callback times every training iteration (discriminator
step included where the schedule has one) and records the peak memory of the iteration: the resident-set
high-water mark (reset at the start of each iteration) minus the resident set at its start, on the CPU;
torch.cuda.max_memory_allocated on a GPU. The first iteration is warm-up and is left out of the median.

`--frozen-grad both` also runs the stage the way the official code does: frozen parts keep
requires_grad=True and run outside no_grad, so their activations are kept for a backward pass that never
updates them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
from measure import PeakMemory, run_isolated, synchronize, write_json


def build_prior(config, path: Path) -> None:
    from grain_pl.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
    from grain_pl.weights.stylegan2_rosinality import export_rosinality

    generator = StyleGAN2Generator(config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                   channel_multiplier=config.channel_multiplier,
                                   channel_max=config.generator_channel_max)
    discriminator = StyleGAN2Discriminator(config.hr_size, channel_multiplier=config.channel_multiplier,
                                           channel_max=config.generator_channel_max)
    export_rosinality(generator, discriminator, generator.mean_latent(256).reshape(-1), path)


def run_one(stage_name: str, preset: str, iterations: int, batch: int, checkpointing: bool, frozen_grad: bool,
            device: str) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from grain_pl.losses import LossWeights
    from grain_pl.networks import get_preset
    from grain_pl.stages import FinalStage, Stage1, Stage2, Stage3

    torch.manual_seed(0)
    config = get_preset(preset)
    stages = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3, "final": FinalStage}
    with tempfile.TemporaryDirectory() as tmp:
        prior = None
        if stage_name != "stage1":
            prior = Path(tmp) / "prior.pt"
            build_prior(config, prior)
        weights = LossWeights(identity=0.0, lr=0.1 if stage_name in ("stage1", "final") else 0.0)
        stage = stages[stage_name](network=preset, prior_path=str(prior) if prior else None, loss_weights=weights,
                                   checkpointing=checkpointing, max_iterations=iterations, metrics_lpips=False)
        if frozen_grad:
            official_like(stage)
        images = [{"hr": torch.rand(3, config.hr_size, config.hr_size) * 2 - 1} for _ in range(batch * iterations)]
        loader = DataLoader(images, batch_size=batch)
        timer = IterationTimer(device)
        trainer = pl.Trainer(accelerator=device, devices=1, max_epochs=-1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
                             limit_val_batches=0, default_root_dir=tmp)
        trainer.fit(stage, train_dataloaders=loader)
    measured = timer.seconds[1:] or timer.seconds
    return {"stage": stage_name, "preset": preset, "batch": batch, "checkpointing": checkpointing,
            "frozen_grad": frozen_grad, "device": device, "threads": torch.get_num_threads(),
            "iterations": len(timer.seconds), "seconds": timer.seconds, "median_seconds": statistics.median(measured),
            "mean_seconds": statistics.fmean(measured),
            "peak_bytes": max(timer.peaks[1:] or timer.peaks), "d_every": stage.d_every}


def official_like(stage) -> None:
    """Frozen parts keep requires_grad=True and run with autograd on (what the official code does)."""
    for name in stage.frozen_parts + ("generator",):
        getattr(stage.grain, name).requires_grad_(True)
    original = stage.generate

    def generate_with_autograd(hr):
        with patched_no_grad():
            return original(hr)

    stage.generate = generate_with_autograd


@contextlib.contextmanager
def patched_no_grad():
    import torch

    saved = torch.no_grad
    torch.no_grad = contextlib.nullcontext  # the stages' `with torch.no_grad():` becomes a no-op
    try:
        yield
    finally:
        torch.no_grad = saved


class IterationTimer(pl.Callback):
    """Times each training iteration and records its peak memory."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.seconds: list[float] = []
        self.peaks: list[int] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._memory = PeakMemory(self.device).__enter__()
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        synchronize(self.device)
        self.seconds.append(time.perf_counter() - self._start)
        self._memory.__exit__(None, None, None)
        self.peaks.append(self._memory.peak)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="tiny-64-lr8")
    parser.add_argument("--stages", nargs="+", default=["stage1", "stage2", "stage3", "final"],
                        choices=["stage1", "stage2", "stage3", "final"])
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--checkpointing", choices=["off", "on", "both"], default="off")
    parser.add_argument("--frozen-grad", choices=["off", "on", "both"], default="off")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    flags = {"off": [False], "on": [True], "both": [False, True]}

    if args.one:
        stage, checkpointing, frozen_grad = args.one.split(",")
        print(json.dumps(run_one(stage, args.preset, args.iterations, args.batch, checkpointing == "1",
                                 frozen_grad == "1", args.device)))
        return

    results = []
    print("| stage | preset | batch | checkpointing | frozen parts | median step (s) | mean step (s) | "
          "peak extra memory (GiB) |")
    print("|---|---|---|---|---|---|---|---|")
    for stage in args.stages:
        for checkpointing in flags[args.checkpointing]:
            for frozen_grad in flags[args.frozen_grad]:
                one = f"{stage},{int(checkpointing)},{int(frozen_grad)}"
                command = [sys.executable, __file__, "--one", one, "--preset", args.preset, "--iterations",
                           str(args.iterations), "--batch", str(args.batch), "--device", args.device]
                result = run_isolated(command, f"{stage} | {args.preset}")
                if result is None:
                    continue
                results.append(result)
                frozen = "requires_grad=True, autograd on" if frozen_grad else "no_grad, requires_grad=False"
                gib = result["peak_bytes"] / 2**30
                print(f"| {stage} | {args.preset} | {args.batch} | {'on' if checkpointing else 'off'} | {frozen} | "
                      f"{result['median_seconds']:.3f} | {result['mean_seconds']:.3f} | {gib:.2f} |", flush=True)
    write_json(results, args.json)


if __name__ == "__main__":
    main()
