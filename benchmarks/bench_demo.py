"""Training throughput of `make demo` (iterations per second per stage, the demo preset at the demo's batch size)
for today's settings and each CPU speed option, measured in one run as ratios to the baseline.

    python benchmarks/bench_demo.py                      # every option, 2 rounds (make bench-demo)
    python benchmarks/bench_demo.py --options baseline channels_last --rounds 3 --iterations 12

Each measurement is a fresh process that runs the demo's own chain (prior -> stage1 -> stage2 -> stage3 -> final,
built by `grain_pl.commands.demo` with its trainer, logger and callbacks) on the demo's crops for `--warmup` +
`--iterations` iterations per stage, and times the iterations after the warm-up (data loading included: the time
between consecutive ends of training iterations). The machine may be shared: the options run interleaved, round
after round (the order reversed every other round), so a load that comes and goes affects baseline and options
alike; a ratio is the median over rounds of (option's it/s / baseline's it/s in the same round).

`numerics` compares every stage's trained parameters after the run with the baseline's (round 1): "same" means
bit-identical, else the largest absolute difference. `first s` is the first iteration's time (compilation, first
allocations), `setup s` the time from `Trainer.fit` to the first iteration (logger, data, optimizers).

Options (`grain_pl.commands.demo.SpeedOptions` unless noted):
  baseline        today's demo: fp32, torch's default threads, W&B offline logger, data loaded in the main process
  channels_last   NHWC memory format for the networks
  threads1        torch.set_num_threads(1)
  interop1        torch.set_num_interop_threads(1)
  compile         torch.compile the forward of every network a stage runs
  workers1        one persistent DataLoader worker
  cached_images   (benchmark only) decoded training crops kept in memory after their first read
  csv_logger      GRAIN_PL_NO_WANDB=1: Lightning's CSV logger instead of W&B offline
  bf16            Lightning precision "bf16-mixed" (CPU autocast; changes numerics)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from measure import run_isolated, write_json

STAGES = ("prior", "stage1", "stage2", "stage3", "final")
OPTIONS: dict[str, dict] = {
    "baseline": {},
    "channels_last": {"speed": {"channels_last": True}},
    "threads1": {"speed": {"threads": 1}},
    "interop1": {"speed": {"interop_threads": 1}},
    "compile": {"speed": {"compile": True}},
    "workers1": {"speed": {"num_workers": 1, "persistent_workers": True}},
    "cached_images": {"cached_images": True},
    "csv_logger": {"env": {"GRAIN_PL_NO_WANDB": "1"}},
    "bf16": {"speed": {"precision": "bf16-mixed"}},
}


def cache_decoded_images(datamodule) -> None:
    """Make the datamodule's training dataset keep every decoded crop (same files, same flips, same order)."""
    original = datamodule._dataset

    def dataset(*args, **kwargs):
        built = original(*args, **kwargs)
        load, cache = built._load_readable, {}

        def cached(index: int):
            if index not in cache:
                cache[index] = load(index)
            return cache[index]

        built._load_readable = cached
        return built

    datamodule._dataset = dataset


def run_option(option: str, data_dir: Path, warmup: int, iterations: int, batch: int, preset: str,
               params_dir: Path | None) -> dict:
    import dataclasses

    import pytorch_lightning as pl
    import torch

    from grain_pl.commands.demo import (
        DemoRecipe,
        SpeedOptions,
        apply_speed_options,
        build_datamodule,
        build_stage,
        build_trainer,
        close_logger,
        configure_torch,
    )
    from grain_pl.networks import get_preset

    settings = OPTIONS[option]
    speed = SpeedOptions(**settings.get("speed", {}))
    configure_torch(speed)
    total = warmup + iterations
    recipe = DemoRecipe(preset=preset, batch_size=batch, speed=speed, iterations=dict.fromkeys(STAGES, total))
    config = get_preset(preset)
    results = {"option": option, "threads": torch.get_num_threads(),
               "interop_threads": torch.get_num_interop_threads(), "stages": {}}
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp)
        for stage_name in STAGES:
            pl.seed_everything(0, workers=True, verbose=False)
            module = build_stage(stage_name, recipe, config, output, total)
            apply_speed_options(module, speed)
            timer = IterationTimes()
            trainer = build_trainer(output / stage_name, stage_name, recipe, [timer.callback()], "cpu")
            datamodule = build_datamodule(data_dir, config, recipe, 0)
            if settings.get("cached_images"):
                cache_decoded_images(datamodule)
            fit_called = time.perf_counter()
            trainer.fit(module, datamodule=datamodule)
            close_logger(trainer.logger)
            ends = timer.ends
            measured = ends[-1] - ends[warmup - 1] if warmup > 0 else ends[-1] - timer.start
            results["stages"][stage_name] = {
                "iterations": module.iteration, "measured_iterations": len(ends) - warmup,
                "iterations_per_second": (len(ends) - warmup) / measured,
                "first_seconds": ends[0] - timer.start, "setup_seconds": timer.start - fit_called}
            if params_dir is not None:
                trained = {name: parameter.detach().contiguous().clone()
                           for name, parameter in module.named_parameters() if parameter.requires_grad}
                torch.save(trained, params_dir / f"{option}-{stage_name}.pt")
    results["speed"] = dataclasses.asdict(speed)
    return results


class IterationTimes:
    """The start of training and the end of every training iteration (time.perf_counter)."""

    def __init__(self) -> None:
        self.start = 0.0
        self.ends: list[float] = []

    def callback(self):
        import pytorch_lightning as pl

        times = self

        class Timer(pl.Callback):
            def on_train_start(self, trainer, pl_module) -> None:
                times.start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                times.ends.append(time.perf_counter())

        return Timer()


def numerics(params_dir: Path, option: str, stage: str) -> str:
    import torch

    baseline = torch.load(params_dir / f"baseline-{stage}.pt")
    other_path = params_dir / f"{option}-{stage}.pt"
    if not other_path.exists():
        return "?"
    other = torch.load(other_path)
    largest = max((baseline[name].float() - other[name].float()).abs().max().item() for name in baseline)
    return "same" if largest == 0 else f"max |diff| {largest:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--options", nargs="+", default=list(OPTIONS), choices=list(OPTIONS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=10, help="measured iterations per stage (after warm-up)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--preset", default="demo-64-lr8")
    parser.add_argument("--train-crops", type=int, default=512)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--params", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.iterations < 1:
        parser.error("--warmup and --iterations must be at least 1")

    if args.one:
        print(json.dumps(run_option(args.one, args.data, args.warmup, args.iterations, args.batch, args.preset,
                                    args.params)))
        return

    from grain_pl.commands.demo import cpu_model, prepare_data
    from grain_pl.networks import get_preset

    options = ["baseline", *[option for option in args.options if option != "baseline"]]
    print(f"bench_demo: {args.preset}, batch {args.batch}, {args.warmup} warm-up + {args.iterations} measured "
          f"iterations per stage, {args.rounds} rounds interleaved; {cpu_model()}, {os.cpu_count()} CPUs; load "
          f"average at start {os.getloadavg()[0]:.1f}", flush=True)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _ = prepare_data(Path(tmp) / "data", get_preset(args.preset).hr_size, args.train_crops, 0, seed=0)
        params_dir = Path(tmp) / "params"
        params_dir.mkdir()
        for round_index in range(args.rounds):
            order = options if round_index % 2 == 0 else options[::-1]
            for option in order:
                command = [sys.executable, __file__, "--one", option, "--data", str(data_dir), "--warmup",
                           str(args.warmup), "--iterations", str(args.iterations), "--batch", str(args.batch),
                           "--preset", args.preset]
                if round_index == 0:
                    command += ["--params", str(params_dir)]
                env_before = dict(os.environ)
                os.environ.update(OPTIONS[option].get("env", {}))
                try:
                    result = run_isolated(command, f"{option} (round {round_index + 1})")
                finally:
                    os.environ.clear()
                    os.environ.update(env_before)
                if result is not None:
                    result["round"] = round_index
                    runs.append(result)
                    rates = ", ".join(f"{stage} {values['iterations_per_second']:.2f}"
                                      for stage, values in result["stages"].items())
                    print(f"  round {round_index + 1}, {option}: it/s {rates}", flush=True)
        report(runs, options, params_dir)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    write_json(runs, args.json)


def report(runs: list[dict], options: list[str], params_dir: Path) -> None:
    by_round: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["option"]] = run
    print("\n| option | stage | it/s (median) | x baseline (median over rounds) | first s | setup s | numerics |")
    print("|---|---|---|---|---|---|---|")
    for option in options:
        for stage in STAGES:
            rates, ratios, firsts, setups = [], [], [], []
            for round_runs in by_round.values():
                if option not in round_runs or stage not in round_runs[option]["stages"]:
                    continue
                values = round_runs[option]["stages"][stage]
                rates.append(values["iterations_per_second"])
                firsts.append(values["first_seconds"])
                setups.append(values["setup_seconds"])
                if "baseline" in round_runs:
                    ratios.append(values["iterations_per_second"]
                                  / round_runs["baseline"]["stages"][stage]["iterations_per_second"])
            if not rates:
                print(f"| {option} | {stage} | failed | | | | |")
                continue
            ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
            same = "-" if option == "baseline" else numerics(params_dir, option, stage)
            print(f"| {option} | {stage} | {statistics.median(rates):.2f} | {ratio} | "
                  f"{statistics.median(firsts):.1f} | {statistics.median(setups):.1f} | {same} |", flush=True)


if __name__ == "__main__":
    main()
