"""`evaluate_folder` and `grain evaluate`: a tiny random GRAIN through the real PNG round trip, the baselines,
the metrics' definitions and the files written."""

from __future__ import annotations

import argparse
import csv
import errno
import json
import math
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from evaluation_crops import write_astronaut_crops  # tests/evaluation/evaluation_crops.py
from PIL import Image
from skimage.data import astronaut
from torch import nn

from grain_pl.codec import GrainModule, lr_png_bytes
from grain_pl.commands.evaluate import add_evaluate_command
from grain_pl.evaluation import (
    CSV_COLUMNS,
    DEFAULT_METHODS,
    PSNR_CAP_DB,
    ReconstructionScorer,
    avif_available,
    decode_image_bytes,
    evaluate_folder,
    format_summary,
)
from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.losses.identity import IdentityLoss
from grain_pl.metrics.image_quality import ImageQualityMetrics
from grain_pl.metrics.lr_fidelity import reference_thumbnail
from grain_pl.networks import get_preset
from grain_pl.weights.lpips_alexnet import find_alexnet_weights

CROPS = {"a.png": (100, 180), "faces/b.png": (60, 200), "faces/c.png": (250, 250)}  # 32 x 32 astronaut crops
LR_METHODS = ("grain", "bilinear", "bicubic")  # the methods that store an LR
# what a run without --methods evaluates: the AVIF rows only where this Pillow writes AVIF
DEFAULTS = [name for name in DEFAULT_METHODS if avif_available() or not name.startswith("avif_")]


class MeanAbsoluteDistance(nn.Module):
    """A stand-in for LPIPS where LPIPS is not what a test looks at: (B,) mean absolute differences."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output - target).abs().flatten(1).mean(1)


class ThumbnailCodec(nn.Module):
    """A test double for GRAIN (tiny-32-lr8 sizes): its LR is the HR's antialiased bicubic 8-bit thumbnail, moved
    right by `shift` pixels; its decoder upscales the LR bicubically."""

    def __init__(self, shift: int = 0) -> None:
        super().__init__()
        self.config = get_preset("tiny-32-lr8")
        self.shift = shift

    def encode(self, hr: torch.Tensor) -> torch.Tensor:
        size = (self.config.lr_size, self.config.lr_size)
        lr = F.interpolate(to_uint8(hr).float(), size=size, mode="bicubic", align_corners=False, antialias=True)
        return from_uint8(torch.roll(lr.round().clamp(0, 255), self.shift, dims=-1))

    def decode(self, lr: torch.Tensor) -> torch.Tensor:
        size = (self.config.hr_size, self.config.hr_size)
        return F.interpolate(lr, size=size, mode="bicubic", align_corners=False).clamp(-1, 1)


class ElsewhereCodec(ThumbnailCodec):
    """A ThumbnailCodec that lives on another device (its buffer is on "meta") and records where it is moved
    instead of moving (its work runs on the CPU whatever it is told)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.empty(0, device="meta"))
        self.moves: list[torch.device] = []

    def to(self, device: torch.device | str) -> ElsewhereCodec:  # type: ignore[override]
        self.moves.append(torch.device(device))
        return self


class CosineArcFace:
    """A stand-in for the ArcFace hook: cosine similarity of the raw pixels."""

    def similarity(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cosine_similarity(output.flatten(1), target.flatten(1), dim=1)


def tiny_identity() -> IdentityLoss:
    # A random 8-d "face embedding" on the 112 x 112 crop: exercises IdentityLoss' path without IR-SE50's 175 MB.
    torch.manual_seed(3)
    return IdentityLoss.from_network(nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.AdaptiveAvgPool2d(1),
                                                   nn.Flatten()))


@pytest.fixture(scope="module")
def perceptual():
    if find_alexnet_weights() is None:
        pytest.skip("LPIPS AlexNet weights are not prepared (make install prepares them)")
    from grain_pl.losses.perceptual import PerceptualLoss

    return PerceptualLoss(resize_to=None, reduction="none")  # built once: the slow part of every run


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_astronaut_crops(tmp_path_factory.mktemp("test_images"), CROPS)


@pytest.fixture(scope="module")
def full_run(model, image_folder, perceptual, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("evaluation") / "run"
    summary = evaluate_folder(model, image_folder, output_dir, identity_weights=tiny_identity(),
                              arcface_model=CosineArcFace(), perceptual=perceptual, save_images=True)
    with (output_dir / "per_image.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        header, rows = reader.fieldnames, list(reader)
    return summary, output_dir, header, rows


def hr_of(image_folder: Path, name: str) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(image_folder / name).convert("RGB"))).permute(2, 0, 1)


# ----- the files -----


def test_csv_has_one_row_per_image_and_method(full_run) -> None:
    _, _, header, rows = full_run
    assert tuple(header) == CSV_COLUMNS
    assert [(row["file"], row["method"]) for row in rows] == [
        (name, method) for name in sorted(CROPS) for method in DEFAULTS]
    for row in rows:
        assert int(row["bytes"]) > 0 and float(row["bpp"]) == pytest.approx(8 * int(row["bytes"]) / (32 * 32))
        for column in ("psnr", "ssim", "psnr_y", "ssim_y", "lpips", "identity", "arcface"):
            assert math.isfinite(float(row[column])), (row["method"], column)
        for column in ("lr_psnr", "lr_ssim"):  # only a method that stores an LR has them
            assert (row[column] != "") == (row["method"] in LR_METHODS), (row["method"], column)
        assert (row["quality"] != "") == row["method"].startswith(("jpeg", "webp", "avif"))
        assert (row["target_bytes"] != "") == row["method"].endswith("_matched")


def test_matched_rows_aim_at_grain_bytes(full_run) -> None:
    _, _, _, rows = full_run
    grain_bytes = {row["file"]: int(row["bytes"]) for row in rows if row["method"] == "grain"}
    for row in rows:
        if row["method"].endswith("_matched"):
            assert int(row["target_bytes"]) == grain_bytes[row["file"]]
            assert int(row["bytes"]) <= int(row["target_bytes"]) or row["quality"] == "1"


def test_summary_json_is_strict_json_with_every_method(full_run) -> None:
    summary, output_dir, _, rows = full_run

    def refuse(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    stored = json.loads((output_dir / "summary.json").read_text(), parse_constant=refuse)
    assert stored == json.loads(json.dumps(summary))
    assert list(stored["methods"]) == DEFAULTS
    grain_psnr = [float(row["psnr"]) for row in rows if row["method"] == "grain"]
    assert stored["methods"]["grain"]["psnr"] == pytest.approx(np.mean(grain_psnr))
    assert stored["methods"]["grain"]["images"] == len(CROPS)
    assert stored["methods"]["jpeg_matched"]["over_target"] >= 0
    assert {"grain", "matched", "psnr/ssim", "lpips"} <= set(stored["protocol"])
    assert stored["versions"]["pillow"] and stored["versions"]["libjpeg"] and stored["versions"]["torch"]
    if avif_available():  # a 32 px AVIF never fits in GRAIN's 8 x 8 PNG: every image is over the target
        assert stored["methods"]["avif_matched"]["over_target"] == len(CROPS)
        assert stored["versions"]["libavif"] and stored["settings"]["pillow_settings"]["avif"]["max_threads"] == 1
    assert stored["settings"]["hr_size"] == 32 and stored["settings"]["lr_size"] == 8


def test_lr_fidelity_of_every_method_that_stores_an_lr(full_run, model, image_folder) -> None:
    summary, output_dir, header, rows = full_run
    assert {"lr_psnr", "lr_ssim"} <= set(header)
    for name in CROPS:
        hr = hr_of(image_folder, name)
        reference = reference_thumbnail(hr, 8)
        by_method = {row["method"]: row for row in rows if row["file"] == name}
        # bicubic's LR is the reference thumbnail itself: the cap
        assert float(by_method["bicubic"]["lr_psnr"]) == PSNR_CAP_DB
        assert float(by_method["bicubic"]["lr_ssim"]) == pytest.approx(1.0, abs=1e-5)
        for method in ("grain", "bilinear"):
            stem = Path(name).with_suffix("")
            stored_lr = decode_image_bytes((output_dir / "payloads" / method / stem).with_suffix(".png").read_bytes())
            expected = ImageQualityMetrics(lpips=False)(from_uint8(stored_lr)[None], from_uint8(reference)[None])
            assert float(by_method[method]["lr_psnr"]) == pytest.approx(float(expected["psnr"]), rel=1e-6)
            assert float(by_method[method]["lr_ssim"]) == pytest.approx(float(expected["ssim"]), rel=1e-5, abs=1e-6)
            assert float(by_method[method]["lr_psnr"]) < PSNR_CAP_DB
    for method, entry in summary["methods"].items():
        values = [float(row["lr_psnr"]) for row in rows if row["method"] == method and row["lr_psnr"] != ""]
        if method in LR_METHODS:
            assert entry["lr_psnr"] == pytest.approx(np.mean(values)) and entry["lr_ssim"] is not None
        else:
            assert values == [] and entry["lr_psnr"] is None and entry["lr_ssim"] is None
    assert "lr_psnr/lr_ssim" in summary["protocol"]


def test_printed_table_shows_lr_fidelity(full_run) -> None:
    summary, _, _, _ = full_run
    header, *lines = format_summary(summary).splitlines()
    assert header.split() == ["method", "bytes", "bpp", "psnr", "ssim", "psnr_y", "lpips", "identity", "lr_psnr",
                              "lr_ssim"]
    cells = {line.split()[0]: line.split()[1:] for line in lines}
    assert list(cells) == DEFAULTS
    assert cells["bicubic"][-2] == f"{PSNR_CAP_DB:.2f}"
    assert cells["grain"][-2] == f"{summary['methods']['grain']['lr_psnr']:.2f}"
    assert cells["jpeg_q40"][-2:] == ["-", "-"]


@pytest.mark.parametrize("shift", [0, 1])
def test_an_lr_equal_to_the_reference_thumbnail_scores_the_cap(shift, image_folder, tmp_path) -> None:
    summary = evaluate_folder(ThumbnailCodec(shift), image_folder, tmp_path / "run", methods=["grain", "bicubic"],
                              perceptual=MeanAbsoluteDistance())
    rows = list(csv.DictReader((tmp_path / "run" / "per_image.csv").open()))
    grain_psnr = [float(row["lr_psnr"]) for row in rows if row["method"] == "grain"]
    assert len(grain_psnr) == len(CROPS)
    if shift == 0:
        assert grain_psnr == [PSNR_CAP_DB] * len(CROPS)
        assert summary["methods"]["grain"]["lr_ssim"] == pytest.approx(1.0, abs=1e-5)
    else:  # one pixel off: still a picture, no longer the thumbnail
        assert all(value < 40 for value in grain_psnr)
        assert summary["methods"]["grain"]["lr_ssim"] < summary["methods"]["bicubic"]["lr_ssim"] - 0.05
    assert summary["methods"]["bicubic"]["lr_psnr"] == PSNR_CAP_DB


def test_rd_plot_is_a_png(full_run) -> None:
    _, output_dir, _, _ = full_run
    with Image.open(output_dir / "rd_plot.png") as plot:
        assert plot.format == "PNG" and plot.size[0] > plot.size[1] > 200  # two panels side by side


def test_bytes_are_the_stored_files_lengths(full_run) -> None:
    _, output_dir, _, rows = full_run
    suffixes = {"jpeg": ".jpg", "webp": ".webp", "avif": ".avif"}
    for row in rows:
        stem = Path(row["file"]).with_suffix("")
        suffix = suffixes.get(row["method"].split("_")[0], ".png")
        payload = (output_dir / "payloads" / row["method"] / stem).with_suffix(suffix).read_bytes()
        assert int(row["bytes"]) == len(payload), row
        stored_output = decode_image_bytes((output_dir / "images" / row["method"] / stem).with_suffix(".png")
                                           .read_bytes())
        assert stored_output.shape == (3, 32, 32)


# ----- GRAIN through the real PNG -----


def test_grain_goes_through_the_real_png_round_trip(full_run, model, image_folder) -> None:
    _, output_dir, _, rows = full_run
    for name in CROPS:
        hr = hr_of(image_folder, name)
        lr_uint8 = to_uint8(model.encode(from_uint8(hr)[None])[0])
        png = lr_png_bytes(lr_uint8)
        stem = Path(name).with_suffix("")
        stored_png = (output_dir / "payloads" / "grain" / stem).with_suffix(".png").read_bytes()
        assert stored_png == png and decode_image_bytes(png).shape == (3, 8, 8)
        row = next(row for row in rows if row["file"] == name and row["method"] == "grain")
        assert int(row["bytes"]) == len(png)  # the PNG file's length, headers included

        output = to_uint8(model.decode(from_uint8(decode_image_bytes(png))[None])[0])
        stored_output = decode_image_bytes((output_dir / "images" / "grain" / stem).with_suffix(".png").read_bytes())
        assert torch.equal(stored_output, output)
        psnr = ImageQualityMetrics(lpips=False)(from_uint8(output)[None], from_uint8(hr)[None])["psnr"]
        assert float(row["psnr"]) == pytest.approx(float(psnr), rel=1e-6)


# ----- the metrics -----


def test_perfect_reconstruction_scores(perceptual) -> None:
    target = torch.from_numpy(np.ascontiguousarray(astronaut()[:32, :32])).permute(2, 0, 1)
    scorer = ReconstructionScorer(perceptual, identity=tiny_identity(), arcface=CosineArcFace())
    (scores,) = scorer.score(target.clone()[None], target)
    assert scores["psnr"] == scores["psnr_y"] == PSNR_CAP_DB  # infinite PSNR, capped so means stay finite
    assert scores["ssim"] == pytest.approx(1.0, abs=1e-5) and scores["ssim_y"] == pytest.approx(1.0, abs=1e-5)
    assert scores["lpips"] == pytest.approx(0.0, abs=1e-6)
    assert scores["identity"] == pytest.approx(1.0, abs=1e-5) and scores["arcface"] == pytest.approx(1.0, abs=1e-5)


def test_scores_follow_image_quality_metrics(perceptual) -> None:
    torch.manual_seed(5)
    target = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    outputs = (target[None].int() + torch.randint(-30, 31, (3, 3, 40, 40))).clamp(0, 255).to(torch.uint8)
    scores = ReconstructionScorer(perceptual).score(outputs, target)
    reference = ImageQualityMetrics(lpips=False, y_channel=True)
    for output, score in zip(outputs, scores):
        expected = reference(from_uint8(output)[None], from_uint8(target)[None])
        for name in ("psnr", "ssim", "psnr_y", "ssim_y"):
            assert score[name] == pytest.approx(float(expected[name]), rel=1e-5, abs=1e-6), name
        assert score["lpips"] == pytest.approx(float(perceptual(from_uint8(output)[None], from_uint8(target)[None])),
                                               rel=1e-4, abs=1e-6)
        assert score["identity"] is None and score["arcface"] is None


# ----- the caller's model -----


def test_the_model_comes_back_in_the_modes_it_had(image_folder, tmp_path) -> None:
    torch.manual_seed(0)
    model = GrainModule(network="tiny-32-lr8").train()
    model.grain.encoder.eval()  # e.g. a stage keeps its frozen parts in eval while it trains
    modes = {name: module.training for name, module in model.named_modules()}
    evaluate_folder(model, image_folder, tmp_path / "train", methods=["grain"], limit=1,
                    perceptual=MeanAbsoluteDistance())
    assert {name: module.training for name, module in model.named_modules()} == modes

    model.eval()
    evaluate_folder(model, image_folder, tmp_path / "eval", methods=["grain"], limit=1,
                    perceptual=MeanAbsoluteDistance())
    assert not any(module.training for module in model.modules())


def test_the_model_comes_back_on_its_own_device(image_folder, tmp_path) -> None:
    model = ElsewhereCodec()
    summary = evaluate_folder(model, image_folder, tmp_path / "run", methods=["grain"], limit=1, device="cpu",
                              perceptual=MeanAbsoluteDistance())
    assert model.moves == [torch.device("cpu"), torch.device("meta")]  # evaluated on the CPU, then sent home
    assert summary["settings"]["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_real_model_comes_back_on_its_own_device(image_folder, tmp_path) -> None:
    torch.manual_seed(0)
    model = GrainModule(network="tiny-32-lr8")
    parameters = list(model.parameters())
    for home, device in (("cpu", "cuda"), ("cuda", "cpu")):
        model.to(home)
        summary = evaluate_folder(model, image_folder, tmp_path / f"{home}-on-{device}", methods=["grain"], limit=1,
                                  device=device, perceptual=MeanAbsoluteDistance())
        assert summary["settings"]["device"] == device
        assert {parameter.device.type for parameter in model.parameters()} == {home}
        assert all(a is b for a, b in zip(parameters, model.parameters()))  # moved in place, as nn.Module.to does


# ----- arguments -----


def test_existing_results_are_not_overwritten(full_run, model, image_folder, perceptual) -> None:
    _, output_dir, _, _ = full_run
    before = (output_dir / "per_image.csv").read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        evaluate_folder(model, image_folder, output_dir, methods=["grain"], perceptual=perceptual)
    assert (output_dir / "per_image.csv").read_bytes() == before


def test_baselines_alone(image_folder, perceptual, tmp_path) -> None:
    summary = evaluate_folder(None, image_folder, tmp_path / "baselines", hr_size=32, lr_size=8, limit=1,
                              perceptual=perceptual)
    expected = [name for name in DEFAULTS if name != "grain" and not name.endswith("_matched")]
    assert list(summary["methods"]) == expected and summary["settings"]["images"] == 1
    assert summary["methods"]["bicubic"]["identity"] is None


def test_bad_arguments_are_refused(model, image_folder, perceptual, tmp_path) -> None:
    with pytest.raises(ValueError, match="hr_size and lr_size"):
        evaluate_folder(None, image_folder, tmp_path, perceptual=perceptual)
    with pytest.raises(ValueError, match="needs a model"):
        evaluate_folder(None, image_folder, tmp_path, methods=["grain"], hr_size=32, lr_size=8, perceptual=perceptual)
    with pytest.raises(ValueError, match="'grain' must be evaluated"):
        evaluate_folder(model, image_folder, tmp_path, methods=["jpeg_matched"], perceptual=perceptual)
    with pytest.raises(ValueError, match="contradicts"):
        evaluate_folder(model, image_folder, tmp_path, lr_size=4, perceptual=perceptual)
    with pytest.raises(ValueError, match="expected 32x32"):  # resize="error": a 64 px image in a 32 px test set
        big = tmp_path / "big"
        big.mkdir()
        Image.fromarray(np.ascontiguousarray(astronaut()[:64, :64])).save(big / "x.png")
        evaluate_folder(model, big, tmp_path / "out", methods=["bicubic"], perceptual=perceptual)


# ----- the command -----


def test_evaluate_command(model, image_folder, tmp_path, capsys) -> None:
    from grain_pl.weights.grain_checkpoint import save_grain

    checkpoint = tmp_path / "tiny.safetensors"
    save_grain(model.grain, checkpoint)
    parser = argparse.ArgumentParser(prog="grain")
    add_evaluate_command(parser.add_subparsers(dest="command", required=True))
    output = tmp_path / "cli"
    argv = ["evaluate", str(image_folder), "--model", str(checkpoint), "-o", str(output), "--limit", "1",
            "--methods", "grain", "bicubic", "jpeg_matched"]
    args = parser.parse_args(argv)
    text = args.run(args)
    assert "grain" in text and "jpeg_matched" in text and "rd_plot.png" in text
    rows = list(csv.DictReader((output / "per_image.csv").open()))
    assert [row["method"] for row in rows] == ["grain", "bicubic", "jpeg_matched"]
    settings = json.loads((output / "summary.json").read_text())["settings"]
    assert settings["checkpoint"] == str(checkpoint)

    args = parser.parse_args(argv)
    with pytest.raises(FileExistsError):  # results there and no --overwrite
        args.run(args)
    with pytest.raises(ValueError, match="weights.pth"):  # a missing ArcFace model names the file
        args = parser.parse_args(argv + ["--overwrite", "--arcface", "weights.pth"])
        args.run(args)


def test_grain_main_runs_evaluate_when_wired(full_run, capsys) -> None:
    from grain_pl import commands as cli

    if "evaluate" not in cli.build_parser().format_help():
        pytest.skip("`grain evaluate` is not wired into grain_pl.commands yet")
    _, output_dir, _, _ = full_run
    assert cli.main(["evaluate", "unused-folder", "--hr-size", "32", "--lr-size", "8", "-o", str(output_dir)]) == 2
    assert "already holds results" in capsys.readouterr().err


# ----- hostile input (issue 10, item 4) -----


class CountingCodec(ThumbnailCodec):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(self, hr: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return super().encode(hr)


def copy_folder(source: Path, target: Path) -> Path:
    for path in source.rglob("*.png"):
        (target / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
        (target / path.relative_to(source)).write_bytes(path.read_bytes())
    return target


def test_an_output_folder_inside_the_test_folder_is_not_evaluated(image_folder, tmp_path) -> None:
    folder = copy_folder(image_folder, tmp_path / "test")
    for _ in range(2):  # the second run finds the first one's images and payloads under test/eval
        summary = evaluate_folder(ThumbnailCodec(), folder, folder / "eval", methods=["grain", "bicubic"],
                                  save_images=True, overwrite=True, perceptual=MeanAbsoluteDistance())
    assert summary["settings"]["images"] == len(CROPS)
    assert summary["settings"]["skipped"] == [[str(folder / "eval"), "output folder of this evaluation, inside the "
                                                                     "test folder (not searched)"]]
    assert summary["settings"]["skipped_summary"].startswith("skipped 1: 1 output folder of this evaluation")


@pytest.mark.parametrize("case", ["broken", "bomb", "size"])
def test_bad_test_images_fail_before_the_first_model_call(image_folder, tmp_path, monkeypatch, case) -> None:
    folder = copy_folder(image_folder, tmp_path / "test")
    if case == "broken":
        (folder / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
        match = r"cannot read image file .*zz\.png: "
    elif case == "bomb":  # 32 x 32 = 1024 pixels: between 1x and 2x the limit, where Pillow itself only warns
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 600)
        match = r"a\.png: refusing to decode a possible decompression bomb: 32x32 = 1024 pixels"
    else:
        Image.fromarray(np.ascontiguousarray(astronaut()[:40, :40])).save(folder / "zz.png")
        match = r"image .*zz\.png has size 40x40"
    model = CountingCodec()
    with pytest.raises(ValueError, match=match):
        evaluate_folder(model, folder, tmp_path / "out", methods=["grain", "bicubic"],
                        perceptual=MeanAbsoluteDistance())
    assert model.calls == 0 and not (tmp_path / "out" / "per_image.csv").exists()


def test_a_model_giving_nan_is_an_error_naming_it(image_folder, tmp_path) -> None:
    class NanCodec(ThumbnailCodec):
        def decode(self, lr: torch.Tensor) -> torch.Tensor:
            return torch.full_like(super().decode(lr), float("nan"))

    with pytest.raises(ValueError, match="model NanCodec: decoding gave NaN or infinite values"):
        evaluate_folder(NanCodec(), image_folder, tmp_path / "out", methods=["grain"],
                        perceptual=MeanAbsoluteDistance())


def fail_file_writes_after(monkeypatch, allowed: int, failure: int = errno.ENOSPC) -> None:
    """Regular-file writes through atomic_write fail with `failure` after the first `allowed` (the disk fills up):
    its fsync raises, as a full disk's would."""
    real_fsync, written = os.fsync, []

    def fsync(descriptor: int) -> None:
        if stat.S_ISREG(os.fstat(descriptor).st_mode):
            if len(written) >= allowed:
                raise OSError(failure, os.strerror(failure))
            written.append(descriptor)
        real_fsync(descriptor)

    monkeypatch.setattr("grain_pl.io.files.os.fsync", fsync)


def temporary_files(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


def test_a_file_broken_past_its_header_keeps_the_rows_done(image_folder, tmp_path) -> None:
    folder = copy_folder(image_folder, tmp_path / "test")
    whole = (folder / "a.png").read_bytes()
    (folder / "zz.png").write_bytes(whole[:len(whole) // 2])  # its header is valid, its pixels are cut
    model = CountingCodec()
    with pytest.raises(ValueError, match=r"cannot read image file .*zz\.png: .*; the rows of the 3 of 4 image\(s\) "
                                         r"evaluated so far are in .*per_image\.partial\.csv"):
        evaluate_folder(model, folder, tmp_path / "out", methods=["grain", "bicubic"],
                        perceptual=MeanAbsoluteDistance())
    rows = list(csv.DictReader((tmp_path / "out" / "per_image.partial.csv").open(newline="")))
    assert [(row["file"], row["method"]) for row in rows] == [
        (name, method) for name in ("a.png", "faces/b.png", "faces/c.png") for method in ("grain", "bicubic")]
    assert not (tmp_path / "out" / "per_image.csv").exists() and not (tmp_path / "out" / "summary.json").exists()

    (folder / "zz.png").unlink()  # fixed: a complete run replaces the partial rows
    evaluate_folder(model, folder, tmp_path / "out", methods=["grain"], perceptual=MeanAbsoluteDistance())
    assert (tmp_path / "out" / "per_image.csv").exists()
    assert not (tmp_path / "out" / "per_image.partial.csv").exists()


def test_an_interrupt_keeps_the_rows_done(image_folder, tmp_path) -> None:
    class InterruptedCodec(ThumbnailCodec):
        calls = 0

        def encode(self, hr: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt
            return super().encode(hr)

    with pytest.raises(KeyboardInterrupt, match=r"the rows of the 1 of 3 image\(s\) evaluated so far are in"):
        evaluate_folder(InterruptedCodec(), image_folder, tmp_path / "out", methods=["grain"],
                        perceptual=MeanAbsoluteDistance())
    rows = list(csv.DictReader((tmp_path / "out" / "per_image.partial.csv").open(newline="")))
    assert [row["file"] for row in rows] == ["a.png"]


def test_a_full_disk_while_saving_images_leaves_no_partial_file(image_folder, tmp_path, monkeypatch) -> None:
    fail_file_writes_after(monkeypatch, allowed=4)  # the first image's output and payload of each of 2 methods
    output = tmp_path / "out"
    # the second image was scored before its outputs failed: its rows count
    with pytest.raises(OSError, match="No space left on device; the rows of the 2 of 3 image") as caught:
        evaluate_folder(ThumbnailCodec(), image_folder, output, methods=["grain", "bicubic"], save_images=True,
                        perceptual=MeanAbsoluteDistance())
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(output / "images/grain/faces/b.png")
    assert "could not be kept either (No space left on device)" in str(caught.value)
    assert temporary_files(output) == []
    saved = sorted(path.relative_to(output).as_posix() for path in output.rglob("*") if path.is_file())
    assert saved == ["images/bicubic/a.png", "images/grain/a.png", "payloads/bicubic/a.png", "payloads/grain/a.png"]
    for name in saved:
        Image.open(output / name).load()  # complete PNGs


def test_a_full_disk_at_the_results_keeps_the_files_written(image_folder, tmp_path, monkeypatch) -> None:
    fail_file_writes_after(monkeypatch, allowed=1)  # per_image.csv, then the disk is full
    output = tmp_path / "out"
    with pytest.raises(OSError, match="No space left on device") as caught:
        evaluate_folder(ThumbnailCodec(), image_folder, output, methods=["grain"], perceptual=MeanAbsoluteDistance())
    assert caught.value.filename == str(output / "summary.json")
    assert sorted(path.name for path in output.iterdir()) == ["per_image.csv"]
    assert len(list(csv.DictReader((output / "per_image.csv").open(newline="")))) == len(CROPS)


def test_a_read_only_output_folder_fails_before_the_first_model_call(image_folder, tmp_path, monkeypatch,
                                                                     capsys) -> None:
    def refused(*args, **kwargs):  # the tests run as root, where a chmod-ed folder stays writable
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr("grain_pl.io.files.tempfile.TemporaryFile", refused)
    model = CountingCodec()
    with pytest.raises(PermissionError, match="cannot write there: Permission denied"):
        evaluate_folder(model, image_folder, tmp_path / "out", methods=["grain"], perceptual=MeanAbsoluteDistance())
    assert model.calls == 0

    from grain_pl.commands import main

    assert main(["evaluate", str(image_folder), "--hr-size", "32", "--lr-size", "8", "--methods", "bicubic",
                 "-o", str(tmp_path / "cli")]) == 2
    assert capsys.readouterr().err == f"grain evaluate: error: {tmp_path / 'cli'}: cannot write there: Permission " \
                                      "denied\n"


@pytest.mark.parametrize(("hr_size", "lr_size"), [(32, 64), (32, 32), (32, 0), (-32, 8)])
def test_impossible_baseline_sizes_are_refused(hr_size, lr_size, image_folder, tmp_path) -> None:
    with pytest.raises(ValueError, match=f"hr_size {hr_size} and lr_size {lr_size} .*the LR smaller than the HR"):
        evaluate_folder(None, image_folder, tmp_path / "out", hr_size=hr_size, lr_size=lr_size, methods=["bicubic"],
                        perceptual=MeanAbsoluteDistance())


@pytest.mark.parametrize(("device", "expected"), [
    ("bogus", "--device bogus: not a torch device (cpu, cuda, cuda:1, mps, ...)"),
    ("cuda:99", "--device cuda:99: no such CUDA device is available")])
def test_a_bad_device_is_one_line_before_the_model_loads(device, expected, tmp_path, capsys) -> None:
    from grain_pl.commands import main

    assert main(["evaluate", str(tmp_path), "--model", "missing.safetensors", "-o", str(tmp_path / "out"),
                 "--device", device]) == 2
    assert capsys.readouterr().err == f"grain evaluate: error: {expected}\n"  # not the missing model's error
