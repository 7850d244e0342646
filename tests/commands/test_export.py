"""`grain export --onnx` on a tiny real model file: the files and what it prints, `--verify`, and one-line errors for
bad model files, an output that is a file and existing outputs (never replaced without --overwrite)."""

from __future__ import annotations

import json
import re

import pytest

pytest.importorskip("onnxruntime", reason="onnxruntime comes with the faces extra (make install)")

from grain_pl.commands import main as grain_main  # noqa: E402


def run(capsys, *argv) -> tuple[int, str, list[str]]:
    code = grain_main([str(item) for item in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_export_writes_the_graphs_and_verifies_them(model_file, tmp_path, capsys):
    folder = tmp_path / "onnx"
    code, out, err = run(capsys, "export", "--onnx", folder, "--model", model_file, "--verify")
    assert (code, err) == (0, [])
    lines = out.splitlines()
    assert [line.split(" (")[0] for line in lines[:4]] == [
        f"wrote {folder / name}" for name in ("encoder.onnx", "decoder.onnx", "grain_onnx.json", "onnx_decode.py")]
    assert re.fullmatch(r"wrote .*encoder\.onnx \(\d+\.\d MiB\)", lines[0])
    differences = dict(re.findall(r"(\w+) (\d\.\d\de[-+]\d\d)", lines[4]))
    assert set(differences) == {"lr", "lr_uint8", "lr_unquantized", "hr"}
    assert float(differences["hr"]) <= 1e-4 and float(differences["lr_unquantized"]) <= 1e-4
    assert lines[5] == (f"exported tiny.safetensors (tiny-32-lr8); decode without torch: python "
                        f"{folder / 'onnx_decode.py'} LR.png --model {folder}")
    manifest = json.loads((folder / "grain_onnx.json").read_text())
    assert (manifest["model"], manifest["preset"], manifest["hr_size"], manifest["lr_size"]) == (
        "tiny.safetensors", "tiny-32-lr8", 32, 8)


def test_existing_outputs_are_refused_before_any_work(model_file, tmp_path, capsys):
    folder = tmp_path / "onnx"
    folder.mkdir()
    (folder / "decoder.onnx").write_bytes(b"mine")
    (folder / "notes.txt").write_text("other files are no concern")
    code, out, err = run(capsys, "export", "--onnx", folder, "--model", tmp_path / "not-even-read.safetensors")
    assert (code, out) == (2, "")
    assert err == [f"grain export: error: {folder / 'decoder.onnx'}: already exists (pass overwrite=True / "
                   "--overwrite to replace it)"]
    assert sorted(path.name for path in folder.iterdir()) == ["decoder.onnx", "notes.txt"]
    assert (folder / "decoder.onnx").read_bytes() == b"mine"
    code, _, err = run(capsys, "export", "--onnx", folder, "--model", model_file, "--overwrite")
    assert (code, err) == (0, [])
    assert (folder / "decoder.onnx").read_bytes() != b"mine" and (folder / "notes.txt").is_file()


def test_bad_model_files_and_outputs_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("not a model")
    code, _, err = run(capsys, "export", "--onnx", tmp_path / "onnx", "--model", bad)
    assert code == 2 and len(err) == 1 and err[0].startswith(f"grain export: error: {bad}: ")
    code, _, err = run(capsys, "export", "--onnx", tmp_path / "onnx", "--model", tmp_path / "missing.safetensors")
    assert (code, err) == (2, [f"grain export: error: {tmp_path / 'missing.safetensors'}: no such checkpoint file"])
    assert not (tmp_path / "onnx").exists()
    code, _, err = run(capsys, "export", "--onnx", bad, "--model", bad)
    assert (code, err) == (2, [f"grain export: error: {bad}: exists and is not a folder (--onnx names the folder "
                               "to write the graphs into)"])


def test_a_missing_onnx_package_is_one_line(model_file, tmp_path, capsys, monkeypatch):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "onnxruntime" else real_find_spec(name, *args))
    code, _, err = run(capsys, "export", "--onnx", tmp_path / "onnx", "--model", model_file, "--verify")
    assert (code, err) == (2, ["grain export: error: --onnx --verify needs the package(s) onnxruntime: pip install "
                               "'grain_pl[onnx]' (make install has them)"])
    assert not (tmp_path / "onnx").exists()
