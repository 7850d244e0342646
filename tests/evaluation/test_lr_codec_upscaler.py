"""`evaluate_folder`'s rows beyond the baselines (issue 12): GRAIN's stored LR re-encoded by a platform (--lr-codec),
a model decoding the bicubic baseline's ordinary thumbnail (--upscaler), and AVIF beside JPEG and WebP."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from evaluation_crops import write_astronaut_crops  # tests/evaluation/evaluation_crops.py
from PIL import Image, JpegImagePlugin
from skimage.data import astronaut
from torch import nn

from grain_pl.codec import GrainModule
from grain_pl.evaluation import (
    PSNR_CAP_DB,
    LrCodecSetting,
    decode_image_bytes,
    encode_with_pillow,
    evaluate_folder,
    format_summary,
    matched_codec_baseline,
    parse_lr_codecs,
    resize_baseline,
)
from grain_pl.evaluation import protocol as protocol_module
from grain_pl.evaluation.protocol import resolve_methods
from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.metrics.lr_fidelity import resize_levels
from grain_pl.networks import get_preset

CROPS = {"a.png": (100, 180), "faces/b.png": (60, 200)}  # 32 x 32 astronaut crops
AVIF = protocol_module.avif_available()
needs_avif = pytest.mark.skipif(not AVIF, reason="this Pillow cannot write AVIF")
LR_CODECS = ["jpeg:10", "webp:90", *(["avif:30"] if AVIF else [])]
RECODED = [f"grain+{codec}_q{quality}" for codec, quality in (setting.split(":") for setting in LR_CODECS)]
BICUBIC_RECODED = [row.replace("grain", "bicubic") for row in RECODED]
UPSCALED = ["grain_upscale", *(row.replace("grain", "grain_upscale") for row in RECODED)]
METHODS = ["grain", "bicubic", "jpeg_q40", *(["avif_matched", "avif_q40"] if AVIF else [])]
SUFFIXES = {"jpeg": ".jpg", "webp": ".webp", "avif": ".avif"}


class MeanAbsoluteDistance(nn.Module):
    """A stand-in for LPIPS where LPIPS is not what a test looks at: (B,) mean absolute differences."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (output - target).abs().flatten(1).mean(1)


class BicubicCodec(nn.Module):
    """A test double for GRAIN (tiny-32-lr8 sizes): the HR's antialiased bicubic thumbnail, upscaled bicubically."""

    def __init__(self) -> None:
        super().__init__()
        self.config = get_preset("tiny-32-lr8")

    def encode(self, hr: torch.Tensor) -> torch.Tensor:
        return F.interpolate(hr, size=self.config.lr_size, mode="bicubic", antialias=True).clamp(-1, 1)

    def decode(self, lr: torch.Tensor) -> torch.Tensor:
        return F.interpolate(lr, size=self.config.hr_size, mode="bicubic").clamp(-1, 1)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_astronaut_crops(tmp_path_factory.mktemp("test_images"), CROPS)


@pytest.fixture(scope="module")
def upscaler() -> GrainModule:
    torch.manual_seed(1)  # another model: a learned encoder it never uses here
    return GrainModule(network="tiny-32-lr8")


@pytest.fixture(scope="module")
def run(model, upscaler, image_folder, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("evaluation") / "run"
    summary = evaluate_folder(model, image_folder, output_dir, methods=METHODS, lr_codecs=LR_CODECS,
                              upscaler=upscaler, perceptual=MeanAbsoluteDistance(), save_images=True)
    rows = list(csv.DictReader((output_dir / "per_image.csv").open(newline="")))
    return summary, output_dir, rows


def payload(output_dir: Path, method: str, name: str, suffix: str = ".png") -> bytes:
    return (output_dir / "payloads" / method / Path(name).with_suffix("")).with_suffix(suffix).read_bytes()


def output_image(output_dir: Path, method: str, name: str) -> torch.Tensor:
    return decode_image_bytes((output_dir / "images" / method / Path(name).with_suffix(".png")).read_bytes())


def pillow_bytes(image: Image.Image, codec: str, quality: int) -> bytes:
    """The protocol's encoder settings written out here, independently of PILLOW_SETTINGS."""
    options = {"jpeg": {"optimize": True}, "webp": {"method": 6},
               "avif": {"speed": 6, "subsampling": "4:2:0", "max_threads": 1}}[codec]
    buffer = io.BytesIO()
    image.save(buffer, codec.upper(), quality=quality, **options)
    return buffer.getvalue()


def decoded_by(model: GrainModule, lr_uint8: torch.Tensor) -> torch.Tensor:
    return to_uint8(model.decode(from_uint8(lr_uint8)[None])[0])


# ----- --lr-codec -----


def test_a_row_per_lr_codec_setting_and_model_in_table_order(run) -> None:
    summary, _, rows = run
    expected = ["grain", *RECODED, "bicubic", *BICUBIC_RECODED, *UPSCALED, *METHODS[2:]]
    assert list(summary["methods"]) == expected == summary["settings"]["rows"]
    assert [(row["file"], row["method"]) for row in rows] == [(name, method) for name in sorted(CROPS)
                                                              for method in expected]
    assert summary["settings"]["lr_codecs"] == LR_CODECS
    assert summary["settings"]["methods"] == METHODS
    assert {"lr_codec", "upscaler"} <= set(summary["protocol"])
    for row in rows:
        if "+" in row["method"]:
            assert row["quality"] == row["method"].split("_q")[-1] and row["target_bytes"] == ""
            for column in ("psnr", "ssim", "psnr_y", "ssim_y", "lpips", "lr_psnr", "lr_ssim"):
                assert math.isfinite(float(row[column])), (row["method"], column)


def test_the_recoded_row_decodes_the_stored_png_re_encoded(run, model, upscaler) -> None:
    _, output_dir, rows = run
    for name in CROPS:
        by_method = {row["method"]: row for row in rows if row["file"] == name}
        for model_row, decoder in (("grain", model), ("grain_upscale", upscaler), ("bicubic", None)):
            stored_png = payload(output_dir, model_row, name)
            lr_levels = Image.open(io.BytesIO(stored_png)).convert("RGB")
            for setting in LR_CODECS:
                codec, quality = setting.split(":")
                method = f"{model_row}+{codec}_q{quality}"
                recoded = pillow_bytes(lr_levels, codec, int(quality))
                assert payload(output_dir, method, name, SUFFIXES[codec]) == recoded
                assert int(by_method[method]["bytes"]) == len(recoded)
                received = decode_image_bytes(recoded)
                assert received.shape == (3, 8, 8)
                # bicubic: the row's own bicubic upscale of what it receives
                expected = resize_levels(received, (32, 32), "bicubic") if decoder is None else \
                    decoded_by(decoder, received)
                assert torch.equal(output_image(output_dir, method, name), expected)


def test_a_low_quality_re_encode_changes_the_reconstruction(run, image_folder, tmp_path) -> None:
    summary, output_dir, rows = run
    for name in CROPS:
        by_method = {row["method"]: row for row in rows if row["file"] == name}
        for model_row in ("grain", "grain_upscale", "bicubic"):  # the model is handed another LR
            assert float(by_method[f"{model_row}+jpeg_q10"]["lr_psnr"]) < float(by_method[model_row]["lr_psnr"])
    # A random tiny decoder barely looks at its LR; one that is the LR's bicubic upscale shows the re-encode in
    # the HR's scores, as GRAIN and as an upscaler.
    recoded = evaluate_folder(BicubicCodec(), image_folder, tmp_path / "bicubic", methods=["grain", "bicubic"],
                              upscaler=BicubicCodec(), lr_codecs="jpeg:5,jpeg:100", save_images=True,
                              perceptual=MeanAbsoluteDistance())
    psnr = {method: entry["psnr"] for method, entry in recoded["methods"].items()}
    for model_row in ("grain", "grain_upscale", "bicubic"):
        assert psnr[f"{model_row}+jpeg_q5"] < psnr[f"{model_row}+jpeg_q100"] - 1
        assert psnr[f"{model_row}+jpeg_q100"] < psnr[model_row]
        for name in CROPS:
            assert not torch.equal(output_image(tmp_path / "bicubic", model_row, name),
                                   output_image(tmp_path / "bicubic", f"{model_row}+jpeg_q5", name))
    table = {line.split()[0]: line.split()[1:] for line in format_summary(summary).splitlines()[1:]}
    assert list(table) == list(summary["methods"])  # every row named in full, however long its name
    assert all(len(cells) == 9 for cells in table.values())


def test_lr_codec_settings_are_parsed() -> None:
    assert parse_lr_codecs(None) == []
    assert parse_lr_codecs("jpeg:90,jpeg:75, WEBP:90") == [LrCodecSetting("jpeg", 90), LrCodecSetting("jpeg", 75),
                                                            LrCodecSetting("webp", 90)]
    assert parse_lr_codecs(["jpeg:90", "jpeg:90,webp:1", "webp:100"]) == [
        LrCodecSetting("jpeg", 90), LrCodecSetting("webp", 1), LrCodecSetting("webp", 100)]
    assert str(LrCodecSetting("jpeg", 90)) == "jpeg:90" and LrCodecSetting("jpeg", 90).row("grain") == "grain+jpeg_q90"


@pytest.mark.parametrize(("setting", "bad", "problem"), [
    ("png:90", "png:90", "unknown codec 'png'"), ("jpeg", "jpeg", "no quality"), ("jpeg:", "jpeg:", "no quality"),
    (":90", ":90", "unknown codec ''"), ("jpeg:0", "jpeg:0", "quality 0 is out of range"),
    ("jpeg:90,jpeg:101", "jpeg:101", "quality 101 is out of range"),
    ("webp:9.5", "webp:9.5", "quality '9.5' is not an integer"),
    ("jpeg:high", "jpeg:high", "quality 'high' is not an integer"),
    ("jpeg:90,,webp:75", "", "empty setting")])
def test_a_bad_lr_codec_setting_names_itself_and_the_expected_form(setting, bad, problem) -> None:
    with pytest.raises(ValueError) as caught:
        parse_lr_codecs(setting)
    message = str(caught.value)
    assert message.startswith(f"--lr-codec {bad!r}: {problem}; expected CODEC:QUALITY, CODEC one of jpeg, webp, "
                              "avif and QUALITY an integer in 1..100")
    assert "\n" not in message


def test_avif_is_refused_where_pillow_cannot_write_it(monkeypatch) -> None:
    monkeypatch.setattr(protocol_module, "avif_available", lambda: False)
    with pytest.raises(ValueError, match=r"--lr-codec 'avif:50': this Pillow cannot write AVIF"):
        parse_lr_codecs("jpeg:90,avif:50")
    assert not any(spec.variant == "avif" for spec in resolve_methods(None, has_model=True))  # the defaults skip it
    with pytest.raises(ValueError, match=r"avif_q40: this Pillow cannot write AVIF"):
        resolve_methods(["grain", "avif_q40"], has_model=True)


@pytest.mark.parametrize("codec", ["jpeg", "webp", pytest.param("avif", marks=needs_avif)])
@pytest.mark.parametrize("size", [(1, 1), (3, 5), (8, 8), (16, 16), (17, 9)])
def test_an_lr_of_any_size_re_encodes(codec, size) -> None:
    lr = torch.from_numpy(np.ascontiguousarray(astronaut()[100:100 + size[0], 180:180 + size[1]])).permute(2, 0, 1)
    data = encode_with_pillow(lr, codec, 75)
    received = decode_image_bytes(data)
    assert received.shape == lr.shape and (received.float() - lr.float()).abs().mean() < 40
    if codec == "jpeg":  # Pillow's default chroma subsampling, 4:2:0, even when the chroma is one 4x4 block
        with Image.open(io.BytesIO(data)) as opened:
            assert JpegImagePlugin.get_sampling(opened) == 2


def test_lr_codec_needs_a_model_row(image_folder, tmp_path) -> None:
    with pytest.raises(ValueError, match="--lr-codec re-encodes a model's stored LR"):
        evaluate_folder(None, image_folder, tmp_path / "out", hr_size=32, lr_size=8, lr_codecs="jpeg:90",
                        perceptual=MeanAbsoluteDistance())
    assert not (tmp_path / "out").exists()


# ----- --upscaler -----


def test_the_upscaler_decodes_the_bicubic_rows_stored_thumbnail(run, upscaler, image_folder) -> None:
    _, output_dir, rows = run
    for name in CROPS:
        thumbnail = payload(output_dir, "bicubic", name)
        assert payload(output_dir, "grain_upscale", name) == thumbnail  # the very bytes of the bicubic row
        by_method = {row["method"]: row for row in rows if row["file"] == name}
        assert by_method["grain_upscale"]["bytes"] == by_method["bicubic"]["bytes"] == str(len(thumbnail))
        assert float(by_method["grain_upscale"]["lr_psnr"]) == PSNR_CAP_DB  # it is the reference thumbnail
        expected = decoded_by(upscaler, decode_image_bytes(thumbnail))
        assert torch.equal(output_image(output_dir, "grain_upscale", name), expected)
        assert not torch.equal(expected, output_image(output_dir, "bicubic", name))
        hr = torch.from_numpy(np.array(Image.open(image_folder / name).convert("RGB"))).permute(2, 0, 1)
        assert thumbnail == resize_baseline(hr, 8, "bicubic").payload


def test_an_upscaler_alone_runs_beside_the_baselines(upscaler, image_folder, tmp_path) -> None:
    summary = evaluate_folder(None, image_folder, tmp_path / "out", methods=["bilinear", "jpeg_q5"], limit=1,
                              upscaler=upscaler, lr_codecs=["jpeg:50"], perceptual=MeanAbsoluteDistance())
    assert list(summary["methods"]) == ["grain_upscale", "grain_upscale+jpeg_q50", "bilinear", "jpeg_q5"]
    assert summary["settings"]["hr_size"] == 32 and summary["settings"]["lr_size"] == 8  # the upscaler's sizes
    assert summary["settings"]["upscaler"] == "GrainModule" and summary["settings"]["upscaler_config"]["lr_size"] == 8


def test_an_upscaler_of_other_sizes_is_refused(model, image_folder, tmp_path) -> None:
    class OtherSizes:
        config = get_preset("tiny-64-lr8")

    with pytest.raises(ValueError, match="the upscaler's hr_size=64 differs from the model's hr_size=32"):
        evaluate_folder(model, image_folder, tmp_path / "out", methods=["grain"], upscaler=OtherSizes(),
                        perceptual=MeanAbsoluteDistance())
    with pytest.raises(ValueError, match="hr_size=32 contradicts the upscaler's hr_size=64"):
        evaluate_folder(None, image_folder, tmp_path / "out", hr_size=32, methods=["bicubic"], upscaler=OtherSizes(),
                        perceptual=MeanAbsoluteDistance())


# ----- AVIF -----


@needs_avif
def test_avif_rows_store_real_avif_files(run, image_folder) -> None:
    summary, output_dir, rows = run
    grain_bytes = {row["file"]: int(row["bytes"]) for row in rows if row["method"] == "grain"}
    for row in rows:
        if not row["method"].startswith("avif_"):
            continue
        data = payload(output_dir, row["method"], row["file"], ".avif")
        assert data[4:12] == b"ftypavif" and int(row["bytes"]) == len(data)
        hr = Image.open(image_folder / row["file"]).convert("RGB")
        assert data == pillow_bytes(hr, "avif", int(row["quality"]))
        assert torch.equal(output_image(output_dir, row["method"], row["file"]), decode_image_bytes(data))
        if row["method"] == "avif_matched":  # a 32 px AVIF takes over 300 B, GRAIN's 8 x 8 PNG about 200
            assert row["quality"] == "1" and int(row["target_bytes"]) == grain_bytes[row["file"]] < len(data)
    assert summary["methods"]["avif_matched"]["over_target"] == len(CROPS)
    assert summary["versions"]["libavif"] and summary["settings"]["pillow_settings"]["avif"]["speed"] == 6


@needs_avif
def test_avif_matched_finds_a_quality_that_fits_a_larger_target() -> None:
    image = torch.from_numpy(np.ascontiguousarray(astronaut()[60:124, 180:244])).permute(2, 0, 1)
    sizes = {quality: len(encode_with_pillow(image, "avif", quality)) for quality in range(1, 101)}
    target = sizes[50]
    result = matched_codec_baseline(image, "avif", target)
    assert result.quality == max(quality for quality, size in sizes.items() if size <= target)
    assert result.num_bytes <= target and not result.over_target
