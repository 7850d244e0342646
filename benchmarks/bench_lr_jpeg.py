"""What the training JPEG of `lr_jpeg` (grain_pl.training.lr_jpeg, `grain demo --jpeg-robust`) costs, and how close
it is to the JPEG a platform writes.

    OMP_NUM_THREADS=1 python benchmarks/bench_lr_jpeg.py            # both parts
    python benchmarks/bench_lr_jpeg.py --part cost --rounds 8       # only the training-step cost

cost: one generator-side training step (forward, losses, backward, optimizer step) of each GRAIN stage as the demo
builds it (`grain_pl.commands.demo.build_stage`: the demo preset and recipe, channels-last, batch 16, random
weights and a random prior), with `lr_jpeg` off and on (LRJpeg's defaults), interleaved step by step so that a
load that comes and goes hits both alike. Timed in CPU seconds of this process (what a step costs an idle core
with one thread); a ratio is the median over rounds of (on / off). Also the JPEG alone (forward and backward) on a
batch of LRs at the demo's and the paper's LR sizes.

pillow: on thumbnails of the demo's held-out photos at 8x8 (the demo's LR) and 16x16 (the paper's), per quality,
the mean PSNR of Pillow's JPEG (libjpeg, its default 4:2:0 chroma) against the lossless thumbnail, the same for
kornia's differentiable JPEG (rounded to 8 bits as a decoder would), kornia's against Pillow's, and Pillow's
with full-resolution chroma (subsampling=0, 4:4:4), which kornia cannot do, against the lossless thumbnail.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from kornia.enhance import jpeg_codec_differentiable
from PIL import Image

from grain_pl.commands.demo import HELD_OUT_PHOTOS, load_photo, random_crops

GRAIN_STAGES = ("stage1", "stage2", "stage3", "final")


# ----- cost -----
def training_step(stage, optimizer, hr: torch.Tensor) -> float:
    """CPU seconds of one generator-side step."""
    start = time.process_time()
    optimizer.zero_grad(set_to_none=True)
    total, _ = stage.generator_losses(stage.generate(hr), hr)
    total.backward()
    optimizer.step()
    return time.process_time() - start


def bench_cost(rounds: int, warmup: int, batch: int) -> None:
    import dataclasses

    from grain_pl.commands.demo import DemoRecipe, apply_speed_options, build_stage
    from grain_pl.networks import get_preset
    from grain_pl.training.lr_jpeg import LRJpeg, jpeg_lr

    recipe = DemoRecipe(batch_size=batch)
    config = get_preset(recipe.preset, **recipe.network_overrides)
    print(f"cost: {recipe.preset}, batch {batch}, {torch.get_num_threads()} thread(s), {warmup} warm-up + {rounds} "
          f"measured steps per stage and setting, interleaved; lr_jpeg on = {LRJpeg()}")
    print("| stage | CPU s/step off | CPU s/step on | on / off (median of rounds) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp)
        torch.manual_seed(0)
        build_stage("prior", recipe, config, output, 1).export(output / "prior" / "stylegan2.pt")
        for name in GRAIN_STAGES:
            runs = {}
            for setting in ("off", "on"):
                torch.manual_seed(0)
                lr_jpeg = dataclasses.asdict(LRJpeg()) if setting == "on" else None
                stage = build_stage(name, dataclasses.replace(recipe, lr_jpeg=lr_jpeg), config, output, 1)
                apply_speed_options(stage, recipe.speed)
                stage.train()
                runs[setting] = (stage, stage.configure_optimizers()[0])
            hr = (torch.rand(batch, 3, config.hr_size, config.hr_size) * 2 - 1).contiguous(
                memory_format=torch.channels_last)
            seconds = {"off": [], "on": []}
            for index in range(warmup + rounds):
                order = ("off", "on") if index % 2 == 0 else ("on", "off")
                for setting in order:
                    spent = training_step(*runs[setting], hr)
                    if index >= warmup:
                        seconds[setting].append(spent)
            ratio = statistics.median(on / off for on, off in zip(seconds["on"], seconds["off"]))
            print(f"| {name} | {statistics.median(seconds['off']):.3f} | {statistics.median(seconds['on']):.3f} | "
                  f"{ratio:.3f} |", flush=True)

    print("\nthe JPEG alone (jpeg_lr, every sample coded), forward + backward, CPU ms per batch of", batch)
    always = LRJpeg(probability=1.0)
    for size in (8, 16):
        lr = (torch.rand(batch, 3, size, size) * 2 - 1).requires_grad_()
        for _ in range(5):
            jpeg_lr(lr, always).sum().backward()
        start = time.process_time()
        for _ in range(50):
            jpeg_lr(lr, always).sum().backward()
        print(f"  {size}x{size}: {(time.process_time() - start) / 50 * 1000:.1f} ms")


# ----- pillow -----
def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def pillow_jpeg(thumbnail: np.ndarray, quality: int, subsampling: int = -1) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(thumbnail).save(buffer, "JPEG", quality=quality, subsampling=subsampling)
    return np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def kornia_jpeg(thumbnail: np.ndarray, quality: int) -> np.ndarray:
    image = torch.from_numpy(thumbnail).permute(2, 0, 1)[None].float() / 255
    coded = jpeg_codec_differentiable(image, torch.tensor([float(quality)]))
    return (coded[0].permute(1, 2, 0) * 255).round().clamp(0, 255).byte().numpy()


def bench_pillow(count: int, qualities: list[int]) -> None:
    rng = np.random.default_rng(0)
    crops = [crop for name in HELD_OUT_PHOTOS for crop in random_crops(load_photo(name), 256, count // 2, rng)]
    print(f"\npillow: {len(crops)} crops of the held-out photos, bicubic thumbnails (mean PSNR, dB)")
    print("| LR | quality | Pillow vs lossless | kornia vs lossless | kornia vs Pillow | Pillow 4:4:4 vs lossless |")
    print("|---|---|---|---|---|---|")
    for size in (8, 16):
        thumbnails = [np.array(crop.resize((size, size), Image.BICUBIC)) for crop in crops]
        for quality in qualities:
            rows = []
            for thumbnail in thumbnails:
                pillow, kornia = pillow_jpeg(thumbnail, quality), kornia_jpeg(thumbnail, quality)
                full_chroma = pillow_jpeg(thumbnail, quality, subsampling=0)
                rows.append((psnr(pillow, thumbnail), psnr(kornia, thumbnail), psnr(kornia, pillow),
                             psnr(full_chroma, thumbnail)))
            means = np.mean(np.array(rows), axis=0)
            print(f"| {size}x{size} | {quality} | {means[0]:.2f} | {means[1]:.2f} | {means[2]:.2f} | {means[3]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("cost", "pillow", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=6, help="measured steps per stage and setting")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--count", type=int, default=64, help="thumbnails per LR size")
    parser.add_argument("--qualities", type=int, nargs="+", default=[95, 90, 75, 50])
    args = parser.parse_args()
    if args.part in ("cost", "both"):
        bench_cost(args.rounds, args.warmup, args.batch)
    if args.part in ("pillow", "both"):
        bench_pillow(args.count, args.qualities)


if __name__ == "__main__":
    main()
