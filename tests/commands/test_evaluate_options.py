"""`grain evaluate --lr-codec / --upscaler` (issue 12): one-line errors before any model loads, and the rows they
add when run on the tiny model file of conftest.py."""

from __future__ import annotations

import csv
import json

import pytest
from codec_images import save_smooth_image

from grain_pl.commands import main
from grain_pl.weights.lpips_alexnet import find_alexnet_weights

EXPECTED_FORM = "expected CODEC:QUALITY, CODEC one of jpeg, webp, avif and QUALITY an integer in 1..100 (e.g. " \
                "jpeg:90,webp:75)"


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr-codec", "png:90"], f"--lr-codec 'png:90': unknown codec 'png'; {EXPECTED_FORM}"),
    (["--lr-codec", "jpeg:90,jpeg:0"], f"--lr-codec 'jpeg:0': quality 0 is out of range; {EXPECTED_FORM}"),
    (["--lr-codec", "jpeg:90", "--lr-codec", "webp"], f"--lr-codec 'webp': no quality; {EXPECTED_FORM}"),
    (["--lr-codec", "webp:x"], f"--lr-codec 'webp:x': quality 'x' is not an integer; {EXPECTED_FORM}")])
def test_a_bad_lr_codec_is_one_line_before_the_model_loads(flags, message, tmp_path, capsys) -> None:
    assert main(["evaluate", str(tmp_path), "--model", "missing.safetensors", "-o", str(tmp_path / "out"),
                 *flags]) == 2
    assert capsys.readouterr().err == f"grain evaluate: error: {message}\n"  # not the missing model's error
    assert not (tmp_path / "out").exists()


def test_lr_codec_without_a_model_is_refused(tmp_path, capsys) -> None:
    assert main(["evaluate", str(tmp_path), "--hr-size", "32", "--lr-size", "8", "-o", str(tmp_path / "out"),
                 "--lr-codec", "jpeg:90"]) == 2
    assert capsys.readouterr().err == "grain evaluate: error: --lr-codec re-encodes a model's stored LR: give " \
                                      "--model or --upscaler\n"


def test_lr_codec_and_upscaler_rows_from_model_files(model_file, tmp_path, capsys) -> None:
    if find_alexnet_weights() is None:
        pytest.skip("LPIPS AlexNet weights are not prepared (make install prepares them)")
    save_smooth_image(tmp_path / "test" / "a.png")
    output = tmp_path / "out"
    # the flag repeated and a comma list: one setting list, duplicates dropped
    assert main(["evaluate", str(tmp_path / "test"), "--model", str(model_file), "--upscaler", str(model_file),
                 "-o", str(output), "--methods", "grain", "bicubic", "--lr-codec", "jpeg:90,jpeg:20",
                 "--lr-codec", "webp:90,jpeg:90", "--save-images"]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader((output / "per_image.csv").open(newline="")))
    recodings = ["jpeg_q90", "jpeg_q20", "webp_q90"]
    expected = ["grain", *(f"grain+{name}" for name in recodings), "bicubic",
                *(f"bicubic+{name}" for name in recodings), "grain_upscale",
                *(f"grain_upscale+{name}" for name in recodings)]
    assert [row["method"] for row in rows] == expected
    assert all(f"\n{name} " in out for name in expected)  # the printed table
    summary = json.loads((output / "summary.json").read_text())
    assert summary["settings"]["lr_codecs"] == ["jpeg:90", "jpeg:20", "webp:90"]
    assert summary["settings"]["upscaler_checkpoint"] == str(model_file)
    for row in rows:
        assert float(row["lpips"]) >= 0 and float(row["psnr"]) > 0
    thumbnail = (output / "payloads" / "bicubic" / "a.png").read_bytes()
    assert (output / "payloads" / "grain_upscale" / "a.png").read_bytes() == thumbnail
    assert (output / "payloads" / "grain+jpeg_q20" / "a.jpg").read_bytes()[:2] == b"\xff\xd8"


@pytest.mark.parametrize(("model", "upscaler", "priors"), [
    ("stage.ckpt", "upscale.safetensors", ["prior.pt", None]),  # the model file carries its own prior
    ("grain.safetensors", "upscale.ckpt", [None, "prior.pt"]),
    ("grain.safetensors", "upscale.safetensors", ["prior.pt", "prior.pt"]),  # refused by the loader, as before
])
def test_prior_goes_to_the_stage_checkpoints(model, upscaler, priors, tmp_path, monkeypatch, capsys) -> None:
    from grain_pl.codec import GrainModule

    calls = []

    def from_checkpoint(path, prior_path=None, map_location="cpu"):
        calls.append((path, prior_path))
        if path == upscaler:  # both loads seen: the rest is the loader's
            raise ValueError("stop here")

    monkeypatch.setattr(GrainModule, "from_checkpoint", from_checkpoint)
    assert main(["evaluate", str(tmp_path), "--model", model, "--upscaler", upscaler, "--prior", "prior.pt",
                 "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "grain evaluate: error: stop here\n"
    assert calls == [(model, priors[0]), (upscaler, priors[1])]
