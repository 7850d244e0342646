"""The embedded default: `make demo` (or `grain demo`) trains the whole GRAIN chain on real photos that an installed
package ships, then evaluates it against the baselines, with nothing from outside.

Data: scikit-image's colour photos. Random crops (at random scales) of the training photos make the training
set; whole photos are held out (`chelsea`, `coffee`) and crops of them make the test set, so no test pixel was
ever seen in training. Then, for a fixed number of iterations per stage (the recipe's; `--scale` multiplies them):

    prior (a StyleGAN2 at the demo size) -> stage1 -> stage2 -> stage3 -> final -> grain evaluate

`--upscaler` trains the upscaler of ordinary thumbnails instead (the encoder a fixed bicubic downscale, see
`upscaler_recipe`); its table names the model's row `grain-upscaler`.

The run is budgeted in iterations and seeded (data crops, sampling order, initialisation), so the same command
gives the same table on any machine; only the thread count and the CPU may change floating-point summation order.
`--minutes` is only a safety cap: when it cuts a stage short it says so on stderr and in metrics.json, and that
run's table is not the reproducible one.

Everything lands in one run folder (`runs/demo`, or `runs/demo-1`, ... if that exists: nothing is overwritten):
data/, one folder per stage (checkpoints, sample grids, the logger's run), model.safetensors (the final model),
eval/ (per-image CSV, summary.json, rate-distortion plot), comparison.png and metrics.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Nothing heavy at import time: `grain --help` imports this module. Lightning and the networks load in run_demo.

TRAIN_PHOTOS = ("astronaut", "rocket", "motorcycle_left", "motorcycle_right", "hubble_deep_field", "retina",
                "immunohistochemistry")
HELD_OUT_PHOTOS = ("chelsea", "coffee")
STAGES = ("prior", "stage1", "stage2", "stage3", "final")
# Seconds per iteration of the default recipe on the project's 2-core CPU, idle, 2 threads (the stages' train
# seconds / iterations in the metrics.json of the README's `make demo` run); only for the whole demo's ETA
# (scaled by how fast the stages so far ran here).
REFERENCE_SECONDS_PER_ITERATION = {"prior": 1.43, "stage1": 0.58, "stage2": 0.61, "stage3": 0.73, "final": 1.43}
REFERENCE_EVALUATION_SECONDS = 20.0  # data, evaluation (AVIF rows included) and comparison.png
# The default safety cap on a whole run: 45 minutes cut the final stage of a run beside one busy-loop process on
# the project's 2-core CPU (it needed about 55), which made that run's table not the reproducible one.
SAFETY_CAP_MINUTES = 120.0
# Issue 9's targets for the demo's held-out crops.
LR_PSNR_TARGET_DB = 32.0
PSNR_MARGIN_DB = 1.0
LPIPS_RATIO = 0.7


def load_photo(name: str) -> np.ndarray:
    """A uint8 RGB photo shipped inside the scikit-image wheel (no download)."""
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(skimage.data, name)()


def random_crops(photo: np.ndarray, size: int, count: int, rng: np.random.Generator,
                 min_scale: float = 0.25) -> list[Image.Image]:
    """Crops of `size` px of the photo resized by a random factor (antialiased, Pillow), so a crop shows
    anything from fine texture to a good part of the scene. Only the crop's region is resampled (Pillow's `box`,
    which still reads the filter's support around it): 12x faster than resizing the whole photo per crop, and
    the same pixels but for rare one-level differences."""
    image = Image.fromarray(photo)
    short = min(image.size)
    crops = []
    for _ in range(count):
        scale = math.exp(rng.uniform(math.log(max(min_scale, size / short)), 0.0))
        width, height = max(size, round(image.width * scale)), max(size, round(image.height * scale))
        left, top = int(rng.integers(0, width - size + 1)), int(rng.integers(0, height - size + 1))
        x_scale, y_scale = width / image.width, height / image.height  # resized pixels per photo pixel
        box = (left / x_scale, top / y_scale, (left + size) / x_scale, (top + size) / y_scale)
        crops.append(image.resize((size, size), Image.LANCZOS, box=box))
    return crops


def prepare_data(root: Path, size: int, train_crops: int, test_crops: int, seed: int) -> tuple[Path, Path]:
    from grain_pl.io.files import atomic_write

    rng = np.random.default_rng(seed)
    train_dir, test_dir = root / "train", root / "test"
    for folder, photos, count in ((train_dir, TRAIN_PHOTOS, train_crops), (test_dir, HELD_OUT_PHOTOS, test_crops)):
        folder.mkdir(parents=True, exist_ok=True)
        per_photo = math.ceil(count / len(photos))
        for name in photos:
            for index, crop in enumerate(random_crops(load_photo(name), size, per_photo, rng)):
                # atomically: a full disk names the file and leaves no half PNG for training to choke on
                atomic_write(folder / f"{name}_{index:04d}.png", lambda file, crop=crop: crop.save(file, "PNG"),
                             overwrite=True)
    return train_dir, test_dir


@dataclass
class SpeedOptions:
    """CPU speed switches; benchmarks/bench_demo.py measures each against the defaults (all off) in one run.
    An option that changes numerics stays off unless a recipe opts in with its effect measured."""

    channels_last: bool = False  # NHWC memory format for the stage's networks and batches
    threads: int | None = None  # torch.set_num_threads; None: torch's default (one per core)
    interop_threads: int | None = None  # torch.set_num_interop_threads (only before any parallel work)
    compile: bool = False  # torch.compile the forward of every network the stage runs
    num_workers: int = 0  # DataLoader worker processes
    persistent_workers: bool = False
    precision: str = "32-true"  # Lightning precision; "bf16-mixed" autocasts (changes numerics)


@dataclass
class DemoRecipe:
    """The demo's training recipe: what each stage trains for (in iterations) and with which losses."""

    preset: str = "demo-64-lr8"
    # The thumbnail half of the promise (issue 9): the LR is the antialiased bicubic thumbnail plus a learned
    # correction, and the HR a correction of its bicubic upscale, so the stored LR stays a faithful downscale
    # (docs/lr_fidelity.md measures the trade-off). The paper presets keep "free" for both.
    network_overrides: dict[str, str] = field(default_factory=lambda: {
        "lr_parameterisation": "bicubic_residual", "hr_parameterisation": "bicubic_residual"})
    batch_size: int = 16
    # iterations per stage (one generator-side step each). Stage 1 gets the most: it trains the encoder and the
    # decoder, and what the HR gains it gains there (docs/lr_fidelity.md: the chain's stage-by-stage scores); at
    # the idle speeds of REFERENCE_SECONDS_PER_ITERATION about 13 minutes of training on the project's 2-core CPU
    iterations: dict[str, int] = field(default_factory=lambda: {
        "prior": 60, "stage1": 620, "stage2": 60, "stage3": 100, "final": 150})
    # peak learning rates; the stages in `cosine_stages` decay theirs to 0 along a cosine over their iterations
    learning_rate: dict[str, float] = field(default_factory=lambda: {
        "prior": 2e-3, "stage1": 2e-3, "stage2": 2e-3, "stage3": 2e-3, "final": 5e-4})
    cosine_stages: tuple[str, ...] = ("stage1", "stage2", "stage3", "final")
    # minutes of CPU favour the pixel loss: LPIPS at 0.1 (the paper: 0.8) reached bicubic's PSNR in 3 minutes
    # of stage 1 where 0.8 stayed 2 dB below, and 0.03 beat 0.1 on PSNR by 0.9 dB *and* on LPIPS over the whole
    # chain (docs/lr_fidelity.md); no GAN (its discriminator steps cost what they would teach)
    lpips: float = 0.03
    adversarial: float = 0.0
    # LR guidance: stage 1 trains the encoder from the thumbnail with a light hold on it; the final stage, which
    # fine-tunes the encoder end to end, holds it harder (at 0.1 it spent the LR's fidelity: lr_psnr 31.7 dB)
    lr_weight: float = 0.1
    final_lr_weight: float = 1.0
    # the LR guidance's reference: "bicubic" is the thumbnail lr_psnr measures against (the paper: "bilinear")
    lr_loss_mode: str = "bicubic"
    train_crops: int = 4000
    test_crops: int = 64
    # channels-last: 1.08-1.25x the iterations per second of each stage on the project's CPU (benchmarks/
    # bench_demo.py); it changes only the order of float summations in the convolutions
    speed: SpeedOptions = field(default_factory=lambda: SpeedOptions(channels_last=True))
    # `grain demo --jpeg-robust`: the GRAIN stages' `lr_jpeg` (grain_pl.training.lr_jpeg.LRJpeg's fields); None: off
    lr_jpeg: dict | None = None

    def __post_init__(self) -> None:
        from grain_pl.networks import get_preset

        get_preset(self.preset)  # an unknown name: one line listing the known ones, before anything is written
        for name, table in (("iterations", self.iterations), ("learning_rate", self.learning_rate)):
            if set(table) != set(STAGES):
                raise ValueError(f"DemoRecipe.{name} needs exactly the stages {', '.join(STAGES)}; got "
                                 f"{', '.join(table) or 'none'}")
        if any(not isinstance(count, int) or count < 1 for count in self.iterations.values()):
            raise ValueError(f"DemoRecipe.iterations must be positive integers, got {self.iterations}")

    def scaled(self, factor: float) -> DemoRecipe:
        """The same recipe with every stage's iterations multiplied by `factor` (at least 1 each)."""
        if not 0 < factor < math.inf:
            raise ValueError(f"--scale must be positive and finite, got {factor}")
        return dataclasses.replace(self, iterations={stage: max(1, round(count * factor))
                                                     for stage, count in self.iterations.items()})


# `grain demo --upscaler`: the fixed bicubic downscale instead of the learned encoder (GrainConfig(encoder="bicubic"),
# the paper's "without invertible encoder" ablation), so the chain learns to upscale thumbnails anyone can make; HR
# as a correction of the bicubic upscale, as in the default recipe; no LR guidance (no encoder to train).
UPSCALER_OVERRIDES = {"encoder": "bicubic", "hr_parameterisation": "bicubic_residual"}
# Its row in the demo's table: the model's own encoder is the bicubic one, so evaluate's "grain" row is the
# upscaling of the bicubic baseline's own thumbnail.
UPSCALER_ROW = "grain-upscaler"


def upscaler_recipe(recipe: DemoRecipe) -> DemoRecipe:
    """The recipe, training the upscaler instead (its iterations, learning rates and losses otherwise)."""
    return dataclasses.replace(recipe, network_overrides=dict(UPSCALER_OVERRIDES), lr_weight=0.0, final_lr_weight=0.0)


def cosine_factor(iteration: int, total: int) -> float:
    """The learning rate's share of its peak at `iteration` (0-based) of `total`: 1 at the start, towards 0 at
    the end, along a half cosine."""
    return 0.5 * (1 + math.cos(math.pi * min(iteration / max(total, 1), 1.0)))


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def demo_eta_seconds(stage: str, done: int, seconds_per_iteration: float, planned: Mapping[str, int],
                     observed: Mapping[str, float]) -> tuple[float, float]:
    """(seconds left in `stage`, seconds left in the whole demo). Later stages are estimated from the reference
    costs, scaled by how much slower or faster the stages measured so far (`observed`: seconds per iteration,
    this stage's included) ran here than on the reference machine."""
    stage_left = max(planned[stage] - done, 0) * seconds_per_iteration
    speed = [seconds / REFERENCE_SECONDS_PER_ITERATION[name] for name, seconds in observed.items()]
    machine = sum(speed) / len(speed) if speed else 1.0
    later = STAGES[STAGES.index(stage) + 1:]
    rest = sum(planned[name] * REFERENCE_SECONDS_PER_ITERATION[name] for name in later) * machine
    return stage_left, stage_left + rest + REFERENCE_EVALUATION_SECONDS * machine


# ----------------------------------------------------------------------------------------------------------------
# The targets of issue 9
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetCheck:
    name: str
    rule: str  # how the threshold is made, in words
    value: float | None
    threshold: float | None
    passed: bool | None  # None: not measured
    note: str = ""

    def line(self) -> str:
        if self.passed is None:
            return f"  {self.name:<7} {self.rule:<34} {self.note}"
        comparison = ">=" if self.name != "LPIPS" else "<="
        digits = 4 if self.name == "LPIPS" else 2
        unit = "" if self.name == "LPIPS" else " dB"
        return (f"  {self.name:<7} {self.rule:<34} {self.value:.{digits}f}{unit} {comparison} "
                f"{self.threshold:.{digits}f}{unit}  {'PASS' if self.passed else 'FAIL'}")


def check_targets(summary: Mapping) -> list[TargetCheck]:
    """Where an evaluation summary (`evaluate_folder`'s dict) stands against the demo's three targets: GRAIN's
    `lr_psnr` >= 32 dB, its PSNR >= bicubic's + 1 dB, its LPIPS <= 0.7 x bicubic's."""
    methods = summary.get("methods", {})
    grain, bicubic = methods.get("grain") or {}, methods.get("bicubic") or {}

    def measured(entry: Mapping, key: str) -> float | None:
        value = entry.get(key)
        return None if value is None or not math.isfinite(value) else float(value)

    def check(name: str, rule: str, value: float | None, threshold: float | None, larger_is_better: bool,
              missing: str) -> TargetCheck:
        if value is None or threshold is None:
            return TargetCheck(name, rule, value, threshold, None, missing)
        passed = value >= threshold if larger_is_better else value <= threshold
        return TargetCheck(name, rule, value, threshold, passed)

    lr_psnr, psnr, lpips = measured(grain, "lr_psnr"), measured(grain, "psnr"), measured(grain, "lpips")
    bicubic_psnr, bicubic_lpips = measured(bicubic, "psnr"), measured(bicubic, "lpips")
    return [
        check("lr_psnr", f"GRAIN's LR vs the thumbnail >= {LR_PSNR_TARGET_DB:g} dB", lr_psnr, LR_PSNR_TARGET_DB,
              True, "lr_psnr not measured"),
        check("PSNR", f"GRAIN >= bicubic + {PSNR_MARGIN_DB:g} dB", psnr,
              None if bicubic_psnr is None else bicubic_psnr + PSNR_MARGIN_DB, True,
              "PSNR not measured" if psnr is None else "bicubic's PSNR not measured"),
        check("LPIPS", f"GRAIN <= {LPIPS_RATIO:g} x bicubic", lpips,
              None if bicubic_lpips is None else bicubic_lpips * LPIPS_RATIO, False,
              "LPIPS not measured" if lpips is None else "bicubic's LPIPS not measured"),
    ]


def format_targets(checks: Sequence[TargetCheck]) -> str:
    met = sum(check.passed is True for check in checks)
    return "\n".join([f"targets (issue 9): {met} of {len(checks)} met", *(check.line() for check in checks)])


# ----------------------------------------------------------------------------------------------------------------
# The picture
# ----------------------------------------------------------------------------------------------------------------

COMPARISON_COLUMNS = ("HR", "GRAIN LR\n1:1", "GRAIN LR\nnearest", "bicubic thumbnail\nnearest", "bicubic\nupscaled",
                      "GRAIN HR")
NEUTRAL_GREY = (128, 128, 128)


def comparison_rows(model, files: Sequence[Path]) -> list[dict[str, np.ndarray]]:
    """Per HR file, the 8-bit pictures (H, W, 3) of the comparison: `hr`, GRAIN's stored LR `lr`, the reference
    thumbnail `thumbnail` (antialiased bicubic, 8-bit: the bicubic baseline's stored LR and `lr_psnr`'s
    reference), `bicubic` (its upscaling) and `grain` (GRAIN's HR), through the evaluation's own code."""
    import torch

    from grain_pl.evaluation import decode_image_bytes, grain_reconstruction, resize_baseline

    def pixels(tensor: torch.Tensor) -> np.ndarray:
        return tensor.permute(1, 2, 0).numpy()

    rows = []
    for file in files:
        hr = torch.from_numpy(np.array(Image.open(file).convert("RGB"))).permute(2, 0, 1).contiguous()
        grain = grain_reconstruction(model, hr)
        bicubic = resize_baseline(hr, model.lr_size, "bicubic")
        rows.append({"hr": pixels(hr), "lr": pixels(decode_image_bytes(grain.payload)),
                     "thumbnail": pixels(decode_image_bytes(bicubic.payload)), "bicubic": pixels(bicubic.output),
                     "grain": pixels(grain.output)})
    return rows


def comparison_image(rows: Sequence[Mapping[str, np.ndarray]], zoom: int = 2, gap: int = 4) -> Image.Image:
    """One row per crop, the columns of COMPARISON_COLUMNS under a header with their names. Every picture is
    shown `zoom` times enlarged (nearest); "GRAIN LR 1:1" keeps the LR's pixels at the HR's scale, centred on
    grey, so it shows the thumbnail as small as it is next to its HR."""
    hr_size = rows[0]["hr"].shape[0]
    cell = hr_size * zoom
    font = ImageFont.load_default(size=11)
    header = 30
    width = len(COMPARISON_COLUMNS) * (cell + gap) + gap
    canvas = Image.new("RGB", (width, header + len(rows) * (cell + gap) + gap), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for column, name in enumerate(COMPARISON_COLUMNS):
        x = gap + column * (cell + gap) + cell // 2
        draw.multiline_text((x, header // 2), name, fill=(0, 0, 0), font=font, anchor="mm", align="center")

    def enlarged(picture: np.ndarray) -> Image.Image:
        return Image.fromarray(picture).resize((cell, cell), Image.NEAREST)

    for index, row in enumerate(rows):
        lr = Image.fromarray(row["lr"])
        one_to_one = Image.new("RGB", (hr_size, hr_size), NEUTRAL_GREY)
        one_to_one.paste(lr, ((hr_size - lr.width) // 2, (hr_size - lr.height) // 2))
        cells = [row["hr"], np.array(one_to_one), row["lr"], row["thumbnail"], row["bicubic"], row["grain"]]
        y = header + gap + index * (cell + gap)
        for column, picture in enumerate(cells):
            canvas.paste(enlarged(picture), (gap + column * (cell + gap), y))
    return canvas


def save_comparison(model, test_dir: Path, path: Path, count: int = 6, zoom: int = 2) -> Path:
    """comparison.png: `count` held-out crops spread over the test set, see `comparison_image`."""
    files = sorted(test_dir.glob("*.png"))
    files = files[:: max(1, len(files) // count)][:count]
    comparison_image(comparison_rows(model, files), zoom=zoom).save(path)
    return path


# ----------------------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------------------


def next_free(path: Path) -> Path:
    if not path.exists():
        return path
    index = 1
    while path.with_name(f"{path.name}-{index}").exists():
        index += 1
    return path.with_name(f"{path.name}-{index}")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def build_logger(stage_dir: Path, stage_name: str):
    """The experiment logger of one stage (W&B offline; CSV with GRAIN_PL_NO_WANDB=1)."""
    from grain_pl.training.loggers import make_logger

    return make_logger(name=f"demo-{stage_name}", save_dir=str(stage_dir))


def close_logger(logger) -> None:
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger):  # a CSVLogger (GRAIN_PL_NO_WANDB=1) has nothing to finish
        import wandb

        wandb.finish()


def configure_torch(speed: SpeedOptions) -> None:
    import torch

    if speed.threads is not None:
        torch.set_num_threads(speed.threads)
    if speed.interop_threads is not None and torch.get_num_interop_threads() != speed.interop_threads:
        torch.set_num_interop_threads(speed.interop_threads)


def apply_speed_options(module, speed: SpeedOptions) -> None:
    """Module-side switches: channels-last weights and compiled forwards (in place: state_dict keys stay)."""
    import torch

    if speed.channels_last:  # 4-D tensors only (Module.to would refuse StyleGAN2's 5-D modulated weights)
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    if speed.compile:
        for network in compiled_networks(module):
            network.compile()


def compiled_networks(module) -> list:
    """The networks whose forward a stage calls: the GRAIN parts and the LPIPS network, or the prior's generator
    (not its discriminator: R1 differentiates D's input gradient, a double backward compiled graphs lack)."""
    if hasattr(module, "grain"):
        parts = [getattr(module.grain, name) for name in ("encoder", "decoder", "latent_codes", "fusion",
                                                           "generator")]
        return [part for part in parts + [getattr(module, "perceptual", None)] if part is not None]
    return [module.generator]


def build_stage(stage_name: str, recipe: DemoRecipe, config, output: Path, max_iterations: int):
    """The LightningModule of one demo stage (its weights from the global seed: seed first)."""
    from grain_pl.losses import LossWeights
    from grain_pl.stages import FinalStage, PriorStage, Stage1, Stage2, Stage3
    from grain_pl.training.lr_jpeg import LRJpeg

    prior_path = output / "prior" / "stylegan2.pt"
    if stage_name == "prior":
        return PriorStage(size=config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                          channel_multiplier=config.channel_multiplier, channel_max=config.generator_channel_max,
                          learning_rate=recipe.learning_rate["prior"], export_path=str(prior_path),
                          max_iterations=max_iterations)
    stage_classes = {"stage1": Stage1, "stage2": Stage2, "stage3": Stage3, "final": FinalStage}
    weights = LossWeights(pixel=1.0, lpips=recipe.lpips, identity=0.0, adversarial=recipe.adversarial,
                          lr={"stage1": recipe.lr_weight, "final": recipe.final_lr_weight}.get(stage_name, 0.0))
    return stage_classes[stage_name](
        network=recipe.preset, network_overrides=dict(recipe.network_overrides),
        prior_path=None if stage_name == "stage1" else str(prior_path),
        loss_weights=weights, learning_rate=recipe.learning_rate[stage_name], lr_loss_mode=recipe.lr_loss_mode,
        export_path=str(output / "model.safetensors") if stage_name == "final" else None,
        max_iterations=max_iterations, lr_jpeg=None if recipe.lr_jpeg is None else LRJpeg(**recipe.lr_jpeg))


def build_datamodule(train_dir: Path, config, recipe: DemoRecipe, seed: int):
    from grain_pl.data import GrainDataModule

    return GrainDataModule(data_dir=str(train_dir), image_size=config.hr_size, split="folder", test_fraction=0.02,
                           seed=seed, hflip=True, batch_size=recipe.batch_size,
                           num_workers=recipe.speed.num_workers, persistent_workers=recipe.speed.persistent_workers)


@dataclass
class StageRecord:
    """What metrics.json keeps of one stage."""

    iterations: int = 0
    iterations_planned: int = 0
    wall_seconds: float = 0.0  # the whole stage: building, training, validation, checkpoints
    train_seconds: float = 0.0  # from the first to the last training iteration's end
    iterations_per_second: float | None = None
    cut_by_cap: bool = False


def stage_callback(stage_name: str, planned: Mapping[str, int], cosine: bool, deadline: float,
                   observed: dict[str, float], record: StageRecord, progress_seconds: float = 10.0,
                   print_line=print):
    """A Lightning callback that (1) decays the learning rates along a cosine over the stage's iterations,
    (2) prints progress (iterations done / planned, it/s, the stage's and the demo's ETA) every
    `progress_seconds`, and (3) stops the stage at the safety cap's `deadline` (time.perf_counter()).
    Only (3) looks at the clock in a way that can change what is trained, and it is reported as a cut."""
    import pytorch_lightning as pl

    class DemoStageCallback(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            self.peaks = [[group["lr"] for group in optimizer.param_groups] for optimizer in trainer.optimizers]
            self.start = self.last_print = time.perf_counter()
            self.first_done = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if not cosine:
                return
            factor = cosine_factor(pl_module.iteration, planned[stage_name])
            for optimizer, peaks in zip(trainer.optimizers, self.peaks):
                for group, peak in zip(optimizer.param_groups, peaks):
                    group["lr"] = peak * factor

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            now = time.perf_counter()
            done = pl_module.iteration
            record.iterations = done
            record.train_seconds = now - self.start
            if self.first_done is None:
                self.first_done = now  # the first iteration carries one-off costs (compilation, allocations)
            elif done > 1:
                observed[stage_name] = (now - self.first_done) / (done - 1)
            if done < planned[stage_name] and now >= deadline:
                trainer.should_stop = True
                record.cut_by_cap = True
            if now - self.last_print >= progress_seconds or done >= planned[stage_name] or record.cut_by_cap:
                self.last_print = now
                print_line(progress_line(stage_name, done, planned, observed))

    return DemoStageCallback()


def progress_line(stage_name: str, done: int, planned: Mapping[str, int], observed: Mapping[str, float]) -> str:
    total = planned[stage_name]
    if stage_name not in observed:
        return f"  [{stage_name}] {done}/{total} iterations"
    seconds = observed[stage_name]
    stage_left, demo_left = demo_eta_seconds(stage_name, done, seconds, planned, observed)
    return (f"  [{stage_name}] {done}/{total} iterations ({done / total:.0%}) | {1 / seconds:.2f} it/s | "
            f"stage ETA {format_duration(stage_left)} | demo ETA {format_duration(demo_left)}")


def build_trainer(stage_dir: Path, stage_name: str, recipe: DemoRecipe, callbacks: list, accelerator: str):
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from grain_pl.training import LogImageGrid

    callbacks = [ModelCheckpoint(dirpath=stage_dir / "checkpoints", save_last=True, save_top_k=0), *callbacks,
                 LogImageGrid(every_n_steps=200, max_images=4)]
    # max_epochs / max_steps unlimited: each stage stops itself at its max_iterations
    return pl.Trainer(
        accelerator=accelerator, devices=1, max_epochs=-1, max_steps=-1, precision=recipe.speed.precision,
        default_root_dir=str(stage_dir), logger=build_logger(stage_dir, stage_name), callbacks=callbacks,
        limit_val_batches=1, val_check_interval=200, check_val_every_n_epoch=None, log_every_n_steps=20,
        enable_model_summary=False, enable_progress_bar=False, num_sanity_val_steps=0)


def run_demo(output: Path, recipe: DemoRecipe | None = None, seed: int = 0, minutes: float = SAFETY_CAP_MINUTES,
             accelerator: str = "cpu", progress_seconds: float = 10.0) -> dict:
    """Train the chain for the recipe's iterations, evaluate, draw, and write metrics.json; returns its dict.
    `minutes` caps the whole run (a safety net: a cut stage is reported, and the table is then not the
    reproducible one). The recipe's thread count holds during the run only."""
    import logging

    import torch

    threads = torch.get_num_threads()
    # Lightning's info lines (accelerators found, tips, batch limits) would repeat for each of the five stages
    lightning_info = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = lightning_info.level
    lightning_info.setLevel(logging.WARNING)
    try:
        return _run_chain(output, recipe, seed, minutes, accelerator, progress_seconds)
    finally:
        torch.set_num_threads(threads)
        lightning_info.setLevel(level)


def _run_chain(output: Path, recipe: DemoRecipe | None, seed: int, minutes: float, accelerator: str,
               progress_seconds: float) -> dict:
    import pytorch_lightning as pl
    import torch

    from grain_pl.codec import GrainModule
    from grain_pl.evaluation import evaluate_folder
    from grain_pl.networks import get_preset
    from grain_pl.training import InitFromStage

    started = time.perf_counter()
    recipe = recipe or DemoRecipe()
    if not minutes > 0:
        raise ValueError(f"--minutes must be positive, got {minutes}")
    config = get_preset(recipe.preset, **recipe.network_overrides)
    configure_torch(recipe.speed)
    output = next_free(Path(output))
    output.mkdir(parents=True)
    os.environ.setdefault("WANDB_SILENT", "true")
    train_dir, test_dir = prepare_data(output / "data", config.hr_size, recipe.train_crops, recipe.test_crops, seed)
    deadline = started + minutes * 60 - 30.0  # the evaluation and the picture take about 15 s
    planned = dict(recipe.iterations)
    _, expected = demo_eta_seconds(STAGES[0], 0, REFERENCE_SECONDS_PER_ITERATION[STAGES[0]], planned, {})
    variant = " upscaler (encoder: bicubic)" if config.encoder == "bicubic" else ""
    if recipe.lr_jpeg is not None:
        jpeg = recipe.lr_jpeg
        variant += (f" jpeg-robust (LR through JPEG {jpeg['quality_min']}..{jpeg['quality_max']}, "
                    f"p={jpeg['probability']:g}{', straight-through' if jpeg['straight_through'] else ''})")
    print(f"grain demo: {output} | {recipe.preset}{variant} | seed {seed} | iterations " +
          ", ".join(f"{stage} {planned[stage]}" for stage in STAGES) +
          f" | about {format_duration(expected)} on a 2-core CPU | safety cap {minutes:g} min", flush=True)

    records = {stage: StageRecord(iterations_planned=planned[stage]) for stage in STAGES}
    observed: dict[str, float] = {}
    previous = None
    for stage_name in STAGES:
        stage_dir = output / stage_name
        begin = time.perf_counter()
        pl.seed_everything(seed, workers=True, verbose=False)  # the stage's weights, sampling order and noise
        module = build_stage(stage_name, recipe, config, output, planned[stage_name])
        apply_speed_options(module, recipe.speed)
        callbacks = [stage_callback(stage_name, planned, stage_name in recipe.cosine_stages, deadline, observed,
                                    records[stage_name], progress_seconds,
                                    print_line=lambda line: print(line, flush=True))]
        if previous is not None:
            callbacks.append(InitFromStage(str(previous)))
        trainer = build_trainer(stage_dir, stage_name, recipe, callbacks, accelerator)
        print(f"grain demo: {stage_name} ({planned[stage_name]} iterations)", flush=True)
        trainer.fit(module, datamodule=build_datamodule(train_dir, config, recipe, seed))
        # A full checkpoint (optimizer state included) so that a stage can also be resumed with `grain fit`.
        trainer.save_checkpoint(stage_dir / "checkpoints" / "final.ckpt", weights_only=False)
        if stage_name != "prior":  # the GRAIN stages chain; the prior reaches them through its exported file
            previous = stage_dir / "checkpoints" / "final.ckpt"
        close_logger(trainer.logger)
        record = records[stage_name]
        record.iterations = module.iteration
        record.wall_seconds = time.perf_counter() - begin
        if record.train_seconds > 0:
            record.iterations_per_second = record.iterations / record.train_seconds
        if record.cut_by_cap:
            print(f"grain demo: WARNING: the {minutes:g}-minute safety cap (--minutes) stopped {stage_name} at "
                  f"{record.iterations} of {record.iterations_planned} iterations; this run's table is NOT the "
                  "reproducible one", file=sys.stderr, flush=True)

    begin = time.perf_counter()
    model = GrainModule.from_checkpoint(output / "model.safetensors")
    upscaler = config.encoder == "bicubic"
    row_note = {"grain_row": f"{UPSCALER_ROW}: the model's encoder is the fixed bicubic downscale"} if upscaler else {}
    summary = evaluate_folder(model, test_dir, output / "eval", settings=row_note)
    evaluation_seconds = time.perf_counter() - begin
    save_comparison(model, test_dir, output / "comparison.png")
    checks = check_targets(summary)
    cut = [stage for stage in STAGES if records[stage].cut_by_cap]
    metrics = {
        "run": str(output), "preset": recipe.preset, "seed": seed, "cap_minutes": minutes,
        "cut_by_cap": cut, "reproducible": not cut,
        "wall_seconds": time.perf_counter() - started, "evaluation_seconds": evaluation_seconds,
        "stages": {stage: dataclasses.asdict(records[stage]) for stage in STAGES},
        "recipe": dataclasses.asdict(recipe), "test_images": len(list(test_dir.glob("*.png"))),
        "machine": {"accelerator": accelerator, "threads": torch.get_num_threads(),
                    "interop_threads": torch.get_num_interop_threads(), "cpu_model": cpu_model(),
                    "torch": torch.__version__, "python": platform.python_version()},
        "targets": [dataclasses.asdict(check) for check in checks],
        "summary": summary,
    }
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
    print_table(summary, labels={"grain": UPSCALER_ROW} if upscaler else None)
    print(format_targets(checks))
    if cut:
        print(f"grain demo: WARNING: the safety cap cut {', '.join(cut)} short; these numbers are NOT the "
              "reproducible ones (metrics.json: cut_by_cap)", file=sys.stderr, flush=True)
    print(f"grain demo: done in {format_duration(metrics['wall_seconds'])} -> {output}", flush=True)
    return metrics


def print_table(summary: dict, labels: Mapping[str, str] | None = None) -> None:
    """The summary's methods as a Markdown table; `labels` renames rows (method -> shown name)."""
    methods = summary.get("methods", summary)
    labels = labels or {}

    def cell(values: Mapping, key: str, digits: int) -> str:
        value = values.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    print("| method | bytes | PSNR | SSIM | LPIPS | lr_psnr |")
    print("|---|---|---|---|---|---|")
    for name, values in methods.items():
        if isinstance(values, dict) and "psnr" in values:
            print(f"| {labels.get(name, name)} | {cell(values, 'bytes', 0)} | {cell(values, 'psnr', 2)} | "
                  f"{cell(values, 'ssim', 4)} | {cell(values, 'lpips', 4)} | {cell(values, 'lr_psnr', 2)} |")


def parse_iterations(items: Sequence[str]) -> dict[str, int]:
    """["stage1=800", ...] -> {"stage1": 800}; a one-line error for anything else."""
    parsed = {}
    for item in items:
        stage, _, count = item.partition("=")
        if stage not in STAGES or not count.isdigit() or int(count) < 1:
            raise ValueError(f"--iterations {item!r}: expected STAGE=N with STAGE one of {', '.join(STAGES)} "
                             "and N a positive integer")
        parsed[stage] = int(count)
    return parsed


def parse_lr_jpeg(items: Sequence[str]) -> dict:
    """["quality_min=85", "probability=0.5", "straight_through=true", ...] -> LRJpeg's fields as a dict (its
    defaults for the rest); a one-line error naming the item for anything else."""
    from grain_pl.training.lr_jpeg import LRJpeg

    fields = dataclasses.asdict(LRJpeg())
    booleans = {"true": True, "false": False}
    for item in items:
        name, _, text = item.partition("=")
        if name not in fields:
            raise ValueError(f"--lr-jpeg {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        try:
            if isinstance(fields[name], bool):
                fields[name] = booleans[text.lower()]
            else:
                fields[name] = type(fields[name])(text)
        except (KeyError, ValueError):
            kind = {bool: "true or false", int: "an integer", float: "a number"}[type(fields[name])]
            raise ValueError(f"--lr-jpeg {item!r}: {name} must be {kind}") from None
    return dataclasses.asdict(LRJpeg(**fields))  # LRJpeg checks the ranges (one line naming the field)


def add_demo_command(subparsers) -> argparse.ArgumentParser:
    """Add `demo` to the `grain` command's subparsers."""
    demo = subparsers.add_parser("demo", help="the embedded default: train the whole chain on bundled photos",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    demo.add_argument("--output", type=Path, default=Path("runs/demo"))
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--scale", type=float, default=1.0,
                      help="multiply every stage's iterations (2: a longer, better run; its table differs)")
    demo.add_argument("--iterations", nargs="+", default=[], metavar="STAGE=N",
                      help="set some stages' iterations (after --scale), e.g. stage1=800 final=300")
    demo.add_argument("--minutes", type=float, default=SAFETY_CAP_MINUTES,
                      help="safety cap on the whole run's wall time; a stage it cuts short is reported")
    demo.add_argument("--threads", type=int, default=None,
                      help="torch threads (default: one per core). 1 copes far better with other CPU-bound work on "
                           "the machine; another count changes floating-point summation order, so the table a little")
    demo.add_argument("--accelerator", default="cpu",
                      help="Lightning accelerator (cpu: the reproducible default; auto uses a GPU if there is one)")
    demo.add_argument("--preset", default=None, metavar="NAME",
                      help="the networks' preset (default: demo-64-lr8, an 8x8 LR). demo-64-lr16: the same networks "
                           "with the paper's 16x16 LR, for measuring JPEG re-encoding (docs/training.md); other "
                           "presets train, but the iterations and the ETA were chosen for the demo's")
    demo.add_argument("--upscaler", action="store_true",
                      help=f"train the upscaler of ordinary thumbnails instead (encoder: bicubic, no learned "
                           f"encoder); its row in the table: {UPSCALER_ROW}")
    demo.add_argument("--jpeg-robust", action="store_true",
                      help="train thumbnails that survive JPEG re-encoding: in the GRAIN stages' training steps the "
                           "decoder gets the LR as a JPEG at a random quality (docs/training.md); evaluation stays "
                           "lossless")
    demo.add_argument("--lr-jpeg", nargs="+", default=None, metavar="FIELD=VALUE",
                      help="--jpeg-robust with some of its settings changed (grain_pl.training.lr_jpeg.LRJpeg's "
                           "fields), e.g. quality_min=85 quality_max=95 probability=0.5 straight_through=true")
    demo.set_defaults(run=_run_demo)
    return demo


def _run_demo(args: argparse.Namespace) -> str:
    recipe = DemoRecipe().scaled(args.scale)
    if args.preset is not None:
        recipe = dataclasses.replace(recipe, preset=args.preset)
    if args.upscaler:
        recipe = upscaler_recipe(recipe)
    recipe = dataclasses.replace(recipe, iterations={**recipe.iterations, **parse_iterations(args.iterations)})
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        recipe = dataclasses.replace(recipe, speed=dataclasses.replace(recipe.speed, threads=args.threads))
    if args.jpeg_robust or args.lr_jpeg is not None:
        recipe = dataclasses.replace(recipe, lr_jpeg=parse_lr_jpeg(args.lr_jpeg or []))
    metrics = run_demo(args.output, recipe, seed=args.seed, minutes=args.minutes, accelerator=args.accelerator)
    return f"grain demo: results in {metrics['run']}"
