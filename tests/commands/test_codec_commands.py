"""`grain encode` / `grain decode` on a tiny real model file: outputs, one-line errors naming the file, exit codes,
overwrite refusal, and the same decoded bytes from another process."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest
import torch
from codec_images import save_smooth_image  # tests/commands/codec_images.py

from grain_pl.codec import RESIZE_POLICIES, GrainModule, read_png_text
from grain_pl.commands import codec as codec_cli
from grain_pl.commands import main as grain_main

PRESET = "tiny-32-lr8"


def run(capsys, *argv) -> tuple[int, str, list[str]]:
    code = grain_main([str(item) for item in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_the_commands_and_their_options():
    parser = argparse.ArgumentParser(prog="grain")
    codec_cli.add_codec_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["encode", "a.png", "b/", "-o", "out", "--model", "m.safetensors", "--resize",
                              "center_crop", "--overwrite", "--device", "cpu", "--batch-size", "4"])
    assert (args.inputs, args.output, args.resize, args.overwrite, args.batch_size) == (
        ["a.png", "b/"], "out", "center_crop", True, 4)
    assert args.run is codec_cli.run_encode
    assert parser.parse_args(["decode", "x.png", "--model", "m.ckpt"]).run is codec_cli.run_decode
    assert codec_cli.RESIZE_CHOICES == RESIZE_POLICIES


def test_encode_then_decode_a_file(model_file, tmp_path, capsys):
    image = save_smooth_image(tmp_path / "photo.png")
    code, out, err = run(capsys, "encode", image, "--model", model_file)
    assert (code, err) == (0, [])
    assert f"{image} -> {tmp_path / 'photo.lr.png'}" in out and "encoded 1 file(s) with tiny.safetensors" in out
    assert read_png_text(tmp_path / "photo.lr.png")["model"] == "tiny.safetensors"
    code, out, err = run(capsys, "decode", tmp_path / "photo.lr.png", "-o", tmp_path / "hr.png", "--model",
                         model_file)
    assert (code, err) == (0, [])
    module = GrainModule.from_checkpoint(model_file)
    assert (tmp_path / "hr.png").read_bytes() == module.decode_file(tmp_path / "photo.lr.png",
                                                                    tmp_path / "again.png").read_bytes()


@pytest.mark.slow  # a subprocess or a whole training chain: `make test-fast` skips it
def test_decoded_bytes_are_the_same_in_another_process(model_file, tmp_path):
    lr_png = GrainModule.from_checkpoint(model_file).encode_file(save_smooth_image(tmp_path / "p.png"))
    here = GrainModule.from_checkpoint(model_file).decode_file(lr_png, tmp_path / "here.png").read_bytes()
    environment = {**os.environ, "PYTHONWARNINGS": "ignore"}
    subprocess.run([sys.executable, "-m", "grain_pl.commands", "decode", str(lr_png), "-o",
                    str(tmp_path / "there.png"), "--model", str(model_file)], check=True, env=environment,
                   capture_output=True, timeout=120)
    assert (tmp_path / "there.png").read_bytes() == here


def test_a_folder_run_reports_bad_files_and_goes_on(model_file, tmp_path, capsys):
    source = tmp_path / "photos"
    save_smooth_image(source / "a.png")
    save_smooth_image(source / "sub" / "b.png", seed=1)
    (source / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    save_smooth_image(source / "wide.png", 48, 32)
    code, out, err = run(capsys, "encode", source, "-o", tmp_path / "lr", "--model", model_file,
                         "--batch-size", "2")
    assert code == 2
    assert sorted(path.relative_to(tmp_path / "lr").as_posix() for path in (tmp_path / "lr").rglob("*.png")) == [
        "a.png", "sub/b.png"]
    assert err[0].startswith(f"grain encode: error: {source / 'sub' / 'broken.png'}: cannot read the image")
    assert err[1] == (f"grain encode: error: {source / 'wide.png'}: expected 32x32, got 48x32; pass --resize "
                      "resize (stretch) or --resize center_crop (resize=... in Python) to adapt it")
    assert err[2] == "grain encode: error: 2 of 4 file(s) failed (see above); 2 written"
    assert len(err) == 3

    code, out, err = run(capsys, "encode", source / "wide.png", "-o", tmp_path / "wide.png", "--model",
                         model_file, "--resize", "center_crop")
    assert (code, err) == (0, [])
    code, out, err = run(capsys, "decode", tmp_path / "lr", "-o", tmp_path / "hr", "--model", model_file)
    assert (code, err) == (0, []) and (tmp_path / "hr" / "sub" / "b.png").is_file()


def test_existing_outputs_are_kept_without_overwrite(model_file, tmp_path, capsys):
    image = save_smooth_image(tmp_path / "photo.png")
    target = tmp_path / "photo.lr.png"
    target.write_bytes(b"precious")
    code, _, err = run(capsys, "encode", image, "--model", model_file)
    assert code == 2 and err[0] == (f"grain encode: error: {target}: already exists; pass --overwrite "
                                    "(overwrite=True) to replace it")
    assert target.read_bytes() == b"precious"
    code, _, err = run(capsys, "encode", image, "--model", model_file, "--overwrite")
    assert (code, err) == (0, []) and target.read_bytes().startswith(b"\x89PNG")


def test_an_lr_of_the_wrong_size_names_the_file(model_file, tmp_path, capsys):
    lr_png = save_smooth_image(tmp_path / "big.lr.png", 16, 16)
    code, _, err = run(capsys, "decode", lr_png, "--model", model_file)
    assert code == 2
    assert err[0] == (f"grain decode: error: {lr_png}: expected a 8x8 LR image for tiny.safetensors "
                      "(tiny-32-lr8), got 16x16")
    assert not (tmp_path / "big.hr.png").exists()


def test_a_bad_model_or_argument_is_one_error_line(model_file, tmp_path, capsys):
    image = save_smooth_image(tmp_path / "photo.png")
    (tmp_path / "bad.safetensors").write_bytes(b"nonsense")
    code, _, err = run(capsys, "encode", image, "--model", tmp_path / "bad.safetensors")
    assert code == 2 and len(err) == 1 and err[0].startswith(f"grain encode: error: {tmp_path / 'bad.safetensors'}: ")
    code, _, err = run(capsys, "encode", tmp_path, "--model", model_file)
    assert code == 2 and err == [f"grain encode: error: {tmp_path}: a folder input needs -o/--output (the output "
                                 "folder)"]
    code, _, err = run(capsys, "encode", tmp_path / "missing.png", image, "-o", tmp_path / "out", "--model",
                       model_file)
    assert code == 2 and err[0] == f"grain encode: error: {tmp_path / 'missing.png'}: no such file or folder"
    assert (tmp_path / "out" / "photo.png").is_file()  # the good input was still encoded
    if not torch.cuda.is_available():
        code, _, err = run(capsys, "decode", image, "--model", model_file, "--device", "cuda")
        assert code == 2 and err == ["grain decode: error: --device cuda: no CUDA device is available"]


def test_the_grain_parser_wires_the_codec_commands(model_file, tmp_path, capsys):
    from grain_pl.commands import build_parser

    parser = build_parser()
    assert parser.parse_args(["encode", "a.png", "--model", "m.safetensors"]).run is codec_cli.run_encode
    assert parser.parse_args(["decode", "a.png", "--model", "m.safetensors"]).run is codec_cli.run_decode
    image = save_smooth_image(tmp_path / "photo.png")
    assert grain_main(["encode", str(image), "--model", str(model_file)]) == 0
    assert grain_main(["encode", str(image), "--model", str(model_file)]) == 2
    assert "already exists" in capsys.readouterr().err
