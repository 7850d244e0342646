"""Training throughput of `make demo` (iterations per second per stage, the demo preset at the demo's batch size)
for today's settings and each CPU speed option, measured in one run as ratios to the baseline.

    python benchmarks/bench_demo.py                      # every option, 2 rounds (make bench-demo)
    python benchmarks/bench_demo.py --options threads1 threads1+compile --rounds 3 --iterations 12

Each measurement is a fresh process that runs the demo's own chain (prior -> stage1 -> stage2 -> stage3 -> final,
built by `grain_pl.commands.demo` with its trainer, logger and callbacks) on the demo's crops for `--warmup` +
`--iterations` iterations per stage, and times the iterations after the warm-up (data loading included: the time
between consecutive ends of training iterations). The machine may be shared: the options run interleaved, round
after round (the order reversed every other round), so a load that comes and goes affects baseline and options
alike; a ratio is the median over rounds of (option's it/s / baseline's it/s in the same round). The options in
`--loaded` are measured once more with a busy-loop process running alongside (rows "... @loaded", compared with
"baseline @loaded"): how each copes with a second CPU-bound process, whatever the machine's own load.

`numerics` compares every stage's trained parameters after the run with the baseline's (round 1): "same" means
bit-identical, else the largest absolute difference. `first s` is the first iteration's time (compilation, first
allocations), `setup s` the time from `Trainer.fit` to the first iteration (logger, data, optimizers). `CPU s/it`
is the process's CPU time per measured iteration: with one thread it is what an iteration costs an idle core,
whatever the load (with more threads it also counts their spinning).

First it times the demo's data preparation (crops of the training photos) the way it was done before (the whole
photo resized for every crop) against today's (only the crop's box resampled), as a ratio.

Switches (`grain_pl.commands.demo.SpeedOptions` unless noted); an option joins switches with "+":
  baseline        the demo without speed options: fp32, NCHW, torch's default threads, W&B offline logger, data
                  loaded in the main process (the demo's recipe now turns channels_last on)
  threads1        torch.set_num_threads(1)
  passive         OMP_WAIT_POLICY=PASSIVE (environment; OpenMP threads sleep instead of spinning while they wait)
  interop1        torch.set_num_interop_threads(1)
  channels_last   NHWC memory format for the networks
  compile         torch.compile the forward of every network a stage runs (not in the defaults: see --options)
  workers1        one persistent DataLoader worker
  cached_images   (benchmark only) decoded training crops kept in memory after their first read
  csv_logger      GRAIN_PL_NO_WANDB=1: Lightning's CSV logger instead of W&B offline
  bf16            Lightning precision "bf16-mixed" (CPU autocast; changes numerics)
  lr_jpeg         (a training option, not a speed one) `grain demo --jpeg-robust`: the LR through a
                  differentiable JPEG in the GRAIN stages' training steps (changes numerics): what it costs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measure import run_isolated, write_json

STAGES = ("prior", "stage1", "stage2", "stage3", "final")
# One switch each; an option on the command line is one or more of them joined by "+" ("threads1+channels_last").
SWITCHES: dict[str, dict] = {
    "baseline": {},
    "channels_last": {"speed": {"channels_last": True}},
    "threads1": {"speed": {"threads": 1}},
    "interop1": {"speed": {"interop_threads": 1}},
    "passive": {"env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    "compile": {"speed": {"compile": True}},
    "workers1": {"speed": {"num_workers": 1, "persistent_workers": True}},
    "cached_images": {"cached_images": True},
    "csv_logger": {"env": {"GRAIN_PL_NO_WANDB": "1"}},
    "bf16": {"speed": {"precision": "bf16-mixed"}},
    "lr_jpeg": {"recipe": {"lr_jpeg": {}}},  # `grain demo --jpeg-robust` (LRJpeg's defaults; changes numerics)
}
DEFAULT_OPTIONS = ("baseline", "passive", "threads1", "threads1+interop1", "threads1+channels_last",
                   "threads1+workers1", "threads1+cached_images", "threads1+csv_logger", "threads1+bf16")
DEFAULT_LOADED = ("baseline", "passive", "threads1")


def settings_of(option: str) -> dict:
    """The merged settings of an option's switches; a one-line error for an unknown switch."""
    merged: dict = {"speed": {}, "env": {}, "recipe": {}}
    for switch in option.split("+"):
        if switch not in SWITCHES:
            raise SystemExit(f"bench_demo: unknown switch {switch!r} in {option!r}; known: {', '.join(SWITCHES)}")
        settings = SWITCHES[switch]
        merged["speed"].update(settings.get("speed", {}))
        merged["env"].update(settings.get("env", {}))
        merged["recipe"].update(settings.get("recipe", {}))
        merged["cached_images"] = merged.get("cached_images", False) or settings.get("cached_images", False)
    return merged


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

    settings = settings_of(option)
    speed = SpeedOptions(**settings["speed"])
    configure_torch(speed)
    total = warmup + iterations
    recipe = DemoRecipe(preset=preset, batch_size=batch, speed=speed, iterations=dict.fromkeys(STAGES, total),
                        **settings["recipe"])
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
            measured = ends[-1] - ends[warmup - 1]
            results["stages"][stage_name] = {
                "iterations": module.iteration, "measured_iterations": len(ends) - warmup,
                "iterations_per_second": (len(ends) - warmup) / measured,
                "cpu_seconds_per_iteration": (timer.cpu_ends[-1] - timer.cpu_ends[warmup - 1]) / (len(ends) - warmup),
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
        self.cpu_ends: list[float] = []  # process CPU time: with one thread, what the iteration costs an idle core

    def callback(self):
        import pytorch_lightning as pl

        times = self

        class Timer(pl.Callback):
            def on_train_start(self, trainer, pl_module) -> None:
                times.start = time.perf_counter()

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
                times.ends.append(time.perf_counter())
                times.cpu_ends.append(time.process_time())

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


LOADED = " @loaded"  # the label of a measurement taken with a busy-loop process running alongside


def measure(option: str, loaded: bool, args: argparse.Namespace, data_dir: Path, params_dir: Path | None,
            label: str) -> dict | None:
    """One fresh process measuring `option`; with `loaded`, a second CPU-bound process runs alongside."""
    command = [sys.executable, __file__, "--one", option, "--data", str(data_dir), "--warmup", str(args.warmup),
               "--iterations", str(args.iterations), "--batch", str(args.batch), "--preset", args.preset]
    if params_dir is not None:
        command += ["--params", str(params_dir)]
    env_before = dict(os.environ)
    os.environ.update(settings_of(option)["env"])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if loaded else None
    try:
        return run_isolated(command, label)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
        os.environ.clear()
        os.environ.update(env_before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--options", nargs="+", default=list(DEFAULT_OPTIONS),
                        help="switches joined by '+' (baseline is always measured); switches: " + ", ".join(SWITCHES))
    parser.add_argument("--loaded", nargs="*", default=list(DEFAULT_LOADED),
                        help="options measured again with a busy-loop process alongside (baseline always, if any)")
    parser.add_argument("--reference", default="threads1",
                        help="a second option to give ratios against (besides the baseline)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iterations", type=int, default=6, help="measured iterations per stage (after warm-up)")
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
    loaded = ["baseline", *[option for option in args.loaded if option != "baseline"]] if args.loaded else []
    for option in {*options, *loaded}:
        settings_of(option)
    keys = options + [option + LOADED for option in loaded]
    print(f"bench_demo: {args.preset}, batch {args.batch}, {args.warmup} warm-up + {args.iterations} measured "
          f"iterations per stage, {args.rounds} rounds interleaved; {cpu_model()}, {os.cpu_count()} CPUs; load "
          f"average at start {os.getloadavg()[0]:.1f}", flush=True)
    bench_crops(get_preset(args.preset).hr_size, count=50, rounds=3)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir, _ = prepare_data(Path(tmp) / "data", get_preset(args.preset).hr_size, args.train_crops, 0, seed=0)
        params_dir = Path(tmp) / "params"
        params_dir.mkdir()
        for round_index in range(args.rounds):
            for key in keys if round_index % 2 == 0 else keys[::-1]:
                option, is_loaded = key.removesuffix(LOADED), key.endswith(LOADED)
                keep_params = params_dir if round_index == 0 and not is_loaded else None
                result = measure(option, is_loaded, args, data_dir, keep_params, f"{key} (round {round_index + 1})")
                if result is not None:
                    result.update(round=round_index, key=key, load_average=os.getloadavg()[0])
                    runs.append(result)
                    rates = ", ".join(f"{stage} {values['iterations_per_second']:.2f}"
                                      for stage, values in result["stages"].items())
                    print(f"  round {round_index + 1}, {key}: it/s {rates} (load average {os.getloadavg()[0]:.1f})",
                          flush=True)
                    write_json(runs, args.json)  # what is measured so far survives an interrupted run
        report(runs, keys, params_dir, args.reference)
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    write_json(runs, args.json)


def whole_photo_crops(photo, size: int, count: int, rng) -> list:
    """The demo's crops as it made them before: the whole photo resized per crop, then cropped (the same draws
    as `grain_pl.commands.demo.random_crops`)."""
    import math

    from PIL import Image

    image = Image.fromarray(photo)
    crops = []
    for _ in range(count):
        scale = math.exp(rng.uniform(math.log(max(0.25, size / min(image.size))), 0.0))
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        left, top = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
        crops.append(image.resize((width, height), Image.LANCZOS).crop((left, top, left + size, top + size)))
    return crops


def bench_crops(size: int, count: int, rounds: int) -> None:
    """The demo's data preparation: seconds for `count` crops per training photo, before (whole photo resized per
    crop) and now (only the crop's box resampled), interleaved; prints the median ratio."""
    import numpy as np

    from grain_pl.commands.demo import TRAIN_PHOTOS, load_photo, random_crops

    photos = [load_photo(name) for name in TRAIN_PHOTOS]
    times: dict[str, list[float]] = {"whole photo": [], "crop box": []}
    for _ in range(rounds):
        for name, make in (("whole photo", whole_photo_crops), ("crop box", random_crops)):
            begin = time.perf_counter()
            for photo in photos:
                make(photo, size, count, np.random.default_rng(0))
            times[name].append(time.perf_counter() - begin)
    before, after = statistics.median(times["whole photo"]), statistics.median(times["crop box"])
    print(f"data: {count} crops of {size} px from each of {len(photos)} photos: whole photo resized per crop "
          f"{before:.2f} s, crop box resampled {after:.2f} s: {before / after:.1f}x faster (median of {rounds})",
          flush=True)


def report(runs: list[dict], keys: list[str], params_dir: Path, reference: str) -> None:
    by_round: dict[int, dict[str, dict]] = {}
    for run in runs:
        by_round.setdefault(run["round"], {})[run["key"]] = run

    def ratio(key: str, stage: str, against: str) -> str:
        ratios = [round_runs[key]["stages"][stage]["iterations_per_second"]
                  / round_runs[against]["stages"][stage]["iterations_per_second"]
                  for round_runs in by_round.values() if key in round_runs and against in round_runs]
        return f"{statistics.median(ratios):.2f}" if ratios else "-"

    print(f"\n| option | stage | it/s (median) | x baseline | x {reference} | CPU s/it | first s | setup s | "
          "numerics vs baseline |")
    print("|---|---|---|---|---|---|---|---|---|")
    for key in keys:
        condition = LOADED if key.endswith(LOADED) else ""
        for stage in STAGES:
            values = [round_runs[key]["stages"][stage] for round_runs in by_round.values()
                      if key in round_runs and stage in round_runs[key]["stages"]]
            if not values:
                print(f"| {key} | {stage} | failed | | | | | | |")
                continue
            rate = statistics.median(value["iterations_per_second"] for value in values)
            cpu = statistics.median(value["cpu_seconds_per_iteration"] for value in values)
            first = statistics.median(value["first_seconds"] for value in values)
            setup = statistics.median(value["setup_seconds"] for value in values)
            same = "-" if key.startswith("baseline") or condition else numerics(params_dir, key, stage)
            print(f"| {key} | {stage} | {rate:.2f} | {ratio(key, stage, 'baseline' + condition)} | "
                  f"{ratio(key, stage, reference + condition)} | {cpu:.2f} | {first:.1f} | {setup:.1f} | {same} |",
                  flush=True)


if __name__ == "__main__":
    main()
