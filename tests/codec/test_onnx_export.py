"""ONNX export (`grain export --onnx`, grain_pl.codec.onnx_export) and the onnxruntime-only decoder
(grain_pl/codec/onnx_decode.py): onnxruntime's outputs against PyTorch's on the demo preset at two batch sizes, the
script's images and errors against `grain decode`'s, the script without torch, and the paper preset (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime comes with the faces extra (make install)")

from grain_pl.codec import GrainModule, onnx_decode, read_png_text  # noqa: E402
from grain_pl.codec.onnx_export import export_onnx, onnx_files, verify_onnx  # noqa: E402
from grain_pl.commands import main as grain_main  # noqa: E402
from grain_pl.io.images import from_uint8, to_uint8  # noqa: E402
from grain_pl.networks import GRAIN, get_preset  # noqa: E402
from grain_pl.weights.grain_checkpoint import save_grain  # noqa: E402

DEMO = "demo-64-lr8"  # HR 64, LR 8
TOLERANCE = 1e-4


def randomise_zero_tensors(grain: GRAIN) -> None:
    """Random values in every tensor a fresh GRAIN holds at zero (biases, the heads that start at zero under the
    bicubic residuals, the prior's noise strengths, latent_avg), so that each takes part in what is compared."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in grain.state_dict().items():
            if tensor.is_floating_point() and not tensor.any():
                # noise strengths of order 1, so that the fixed noise shows in the final image
                scale = 1.0 if name.endswith("noise.weight") else 0.1
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """parameterisation -> (module, model file, export folder) of a seeded random demo-preset model; "bicubic_residual"
    is the network `grain demo` trains, "free" the paper's parameterisation at the demo's sizes."""
    made = {}

    def get(parameterisation: str = "bicubic_residual"):
        if parameterisation not in made:
            folder = tmp_path_factory.mktemp(f"onnx_{parameterisation}")
            torch.manual_seed(0)
            config = get_preset(DEMO, lr_parameterisation=parameterisation, hr_parameterisation=parameterisation)
            grain = GRAIN(config)
            randomise_zero_tensors(grain)
            model_file = save_grain(grain, folder / "demo.safetensors", preset=DEMO)
            module = GrainModule.from_checkpoint(model_file)
            export_onnx(module, folder / "onnx")
            made[parameterisation] = module, model_file, folder / "onnx"
        return made[parameterisation]

    return get


def session(path: Path) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def smooth_image(path: Path, size: int = 64, seed: int = 0) -> Path:
    coarse = np.random.default_rng(seed).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    Image.fromarray(coarse).resize((size, size), Image.BICUBIC).save(path)
    return path


@pytest.mark.parametrize("parameterisation", ["bicubic_residual", "free"])
@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_pytorch(exports, parameterisation, batch):
    module, _, folder = exports(parameterisation)
    generator = torch.Generator().manual_seed(batch)
    hr = torch.rand(batch, 3, 64, 64, generator=generator) * 2 - 1

    encoder = session(folder / "encoder.onnx")
    assert [(item.name, item.shape) for item in encoder.get_inputs()] == [("hr", ["batch", 3, 64, 64])]
    lr_onnx, levels_onnx, unquantized_onnx = encoder.run(None, {"hr": hr.numpy()})
    with torch.no_grad():
        unquantized = module.grain.encoder(hr)
    expected_lr = module.encode(hr)
    assert np.abs(unquantized_onnx - unquantized.numpy()).max() <= TOLERANCE
    assert levels_onnx.dtype == np.uint8 and levels_onnx.shape == (batch, 3, 8, 8)
    expected_levels = to_uint8(expected_lr).numpy()
    # a level can differ only where the float LR is within the tolerance of a rounding boundary
    near_tie = np.abs((unquantized.numpy() + 1) * 127.5 % 1 - 0.5) < TOLERANCE * 127.5
    differ = levels_onnx != expected_levels
    assert not (differ & ~near_tie).any() and np.abs(levels_onnx.astype(int) - expected_levels).max() <= 1
    assert np.array_equal(lr_onnx, from_uint8(torch.from_numpy(levels_onnx)).numpy())  # lr = the PNG's levels

    decoder = session(folder / "decoder.onnx")
    assert [(item.name, item.shape) for item in decoder.get_inputs()] == [("lr", ["batch", 3, 8, 8])]
    (hr_onnx,) = decoder.run(None, {"lr": expected_lr.numpy()})
    expected_hr = module.decode(expected_lr).numpy()
    assert hr_onnx.shape == (batch, 3, 64, 64)
    assert np.abs(hr_onnx - expected_hr).max() <= TOLERANCE
    assert (np.abs(expected_hr) < 0.99).mean() > 0.5  # mostly unclamped: the network's values are compared


def test_the_decoder_holds_the_fixed_noise(exports):
    module, _, folder = exports()
    lr = module.encode(torch.rand(2, 3, 64, 64) * 2 - 1)
    (hr_onnx,) = session(folder / "decoder.onnx").run(None, {"lr": lr.numpy()})
    module.grain.prior_noise = "zero"
    try:
        without_noise = module.decode(lr).numpy()
    finally:
        module.grain.prior_noise = "auto"
    assert np.abs(hr_onnx - without_noise).max() > 30 * TOLERANCE  # the noise shows
    assert np.abs(hr_onnx - module.decode(lr).numpy()).max() <= TOLERANCE


def test_verify_and_the_manifest(exports):
    module, _, folder = exports()
    differences = verify_onnx(module, folder, threads=1)
    assert set(differences) == {"lr", "lr_uint8", "lr_unquantized", "hr"}
    assert differences["hr"] <= TOLERANCE and differences["lr_unquantized"] <= TOLERANCE
    manifest = json.loads((folder / "grain_onnx.json").read_text())
    assert [manifest[key] for key in ("hr_size", "lr_size", "opset", "prior_noise")] == [64, 8, 17, "const"]
    assert manifest["describe"] == module.describe() == "demo.safetensors (demo-64-lr8)"
    assert manifest["config"] == json.loads(json.dumps(module.config.as_dict()))
    assert manifest["decoder"]["inputs"] == {"lr": {"shape": ["batch", 3, 8, 8], "dtype": "float32",
                                                    "range": [-1, 1]}}
    assert manifest["encoder"]["outputs"]["lr_uint8"] == {"shape": ["batch", 3, 8, 8], "dtype": "uint8",
                                                          "range": [0, 255]}
    for graph in ("encoder", "decoder"):
        names = [item.name for item in session(folder / f"{graph}.onnx").get_outputs()]
        assert names == list(manifest[graph]["outputs"])
    names = ["encoder.onnx", "decoder.onnx", "grain_onnx.json", "onnx_decode.py"]
    assert [path.name for path in onnx_files(folder)] == names
    assert sorted(path.name for path in folder.iterdir()) == sorted(names)


def test_random_prior_noise_is_refused(tmp_path):
    grain = GRAIN("tiny-32-lr8", prior_noise="random")
    with pytest.raises(ValueError, match="prior_noise='random' draws new noise at every decode"):
        export_onnx(grain, tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists() and grain.training  # nothing written, the mode restored


def test_the_script_decodes_as_grain_decode(exports, tmp_path):
    module, _, folder = exports()
    assert (folder / "onnx_decode.py").read_bytes() == Path(onnx_decode.__file__).read_bytes()
    lr_png = module.encode_file(smooth_image(tmp_path / "photo.png"))  # as grain encode writes it
    expected = module.decode_file(lr_png, tmp_path / "torch.png")
    decoder = onnx_decode.OnnxDecoder(folder, threads=1)
    written = decoder.decode_file(lr_png, tmp_path / "onnx.png")
    difference = np.abs(np.asarray(Image.open(written), dtype=int) - np.asarray(Image.open(expected), dtype=int))
    assert difference.max() <= 1
    assert read_png_text(written) == read_png_text(expected)  # grain decode's text chunks
    levels = np.asarray(Image.open(lr_png).convert("RGB"))
    batch = decoder.decode(np.stack([levels, levels[::-1]]))  # a batch of two
    assert batch.shape == (2, 64, 64, 3) and np.array_equal(batch[0], np.asarray(Image.open(written)))



def test_the_docs_snippet_decodes(exports, tmp_path, monkeypatch):
    """docs/codec.md's onnxruntime-only lines, as printed, decode what grain encode wrote as grain decode does."""
    module, _, folder = exports()
    text = (Path(__file__).parents[2] / "docs" / "codec.md").read_text()
    section = text[text.index("## Decode anywhere (ONNX)"):]
    snippet = section[section.index("```python\n") + len("```python\n"):]
    snippet = snippet[:snippet.index("```")]
    assert "torch" not in snippet
    monkeypatch.chdir(tmp_path)
    (tmp_path / "grain_onnx").symlink_to(folder)
    lr_png = module.encode_file(smooth_image(tmp_path / "photo.png"))
    assert lr_png.name == "photo.lr.png"
    exec(compile(snippet, "docs/codec.md", "exec"), {})
    expected = module.decode_file(lr_png, tmp_path / "torch.png")
    difference = np.abs(np.asarray(Image.open(tmp_path / "photo.hr.png"), dtype=int)
                        - np.asarray(Image.open(expected), dtype=int))
    assert difference.max() <= 1


@pytest.mark.slow  # a subprocess: `make test-fast` skips it
def test_the_script_runs_without_torch(exports, tmp_path):
    module, _, folder = exports()
    lr_png = module.encode_file(smooth_image(tmp_path / "photo.png"))
    expected = module.decode_file(lr_png, tmp_path / "torch.png")
    # torch and grain_pl cannot be imported in the child: the script must do without them
    runner = ("import runpy, sys; sys.modules['torch'] = None; sys.modules['grain_pl'] = None; "
              "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", runner, str(folder / "onnx_decode.py"), str(lr_png), "--model",
                             str(folder), "--threads", "1"], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{lr_png} -> {tmp_path / 'photo.hr.png'}",
                                          "decoded 1 file(s) with demo.safetensors (demo-64-lr8)"]
    difference = np.abs(np.asarray(Image.open(tmp_path / "photo.hr.png"), dtype=int)
                        - np.asarray(Image.open(expected), dtype=int))
    assert difference.max() <= 1


def sixteen_bit_png(path: Path, levels: np.ndarray) -> None:
    rows = b"".join(b"\x00" + (row.astype(">u2") * 257).tobytes() for row in levels.reshape(8, 24))

    def chunk(kind, data):
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", (8).to_bytes(4, "big") * 2 + bytes([16, 2, 0, 0, 0]))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # the "bomb" case, in grain decode
@pytest.mark.parametrize("case", ["wrong_size", "jpeg", "alpha", "sixteen_bit", "truncated", "not_an_image",
                                  "missing", "bomb", "grey_ok"])
def test_the_script_checks_inputs_as_grain_decode(exports, tmp_path, capsys, monkeypatch, case):
    module, model_file, folder = exports()
    levels = np.asarray(module.encode_image(smooth_image(tmp_path / "photo.png")))
    path = tmp_path / "lr.png"
    if case == "wrong_size":
        Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(path)
    elif case == "jpeg":
        path = tmp_path / "lr.jpg"
        Image.fromarray(levels).save(path, quality=95)
    elif case == "alpha":
        rgba = np.concatenate([levels, np.full((8, 8, 1), 255, np.uint8)], axis=2)
        rgba[0, 0, 3] = 128
        Image.fromarray(rgba).save(path)
    elif case == "sixteen_bit":
        sixteen_bit_png(path, levels)
    elif case == "truncated":
        Image.fromarray(levels).save(path)
        path.write_bytes(path.read_bytes()[:40])
    elif case == "not_an_image":
        path.write_text("not an image")
    elif case == "bomb":  # over Pillow's decompression-bomb limit, where Pillow itself only warns
        Image.fromarray(levels).save(path)
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)
    elif case == "grey_ok":  # exact levels: decoded, by both, to the same image
        Image.fromarray(levels[..., 0]).save(path)

    code = grain_main(["decode", str(path), "-o", str(tmp_path / "torch.png"), "--model", str(model_file)])
    grain_errors = [line for line in capsys.readouterr().err.splitlines() if " error: " in line]  # not warnings
    script_code = onnx_decode.main([str(path), "-o", str(tmp_path / "onnx.png"), "--model", str(folder),
                                    "--threads", "1"])
    script_errors = capsys.readouterr().err.splitlines()
    assert script_code == code
    if case == "grey_ok":
        assert code == 0 and grain_errors == script_errors == []
        difference = np.abs(np.asarray(Image.open(tmp_path / "onnx.png"), dtype=int)
                            - np.asarray(Image.open(tmp_path / "torch.png"), dtype=int))
        assert difference.max() <= 1
        return
    assert code == 2 and len(script_errors) == len(grain_errors) == 2
    assert grain_errors[0].startswith(f"grain decode: error: {path}: ")
    assert script_errors[0] == grain_errors[0].replace("grain decode: ", "onnx_decode: ", 1)
    assert not (tmp_path / "onnx.png").exists()
    if case in ("jpeg", "alpha", "sixteen_bit"):  # decoded anyway on request
        assert onnx_decode.main([str(path), "-o", str(tmp_path / "onnx.png"), "--model", str(folder),
                                 "--allow-lossy-lr"]) == 0


def test_the_script_never_replaces_an_output(exports, tmp_path, capsys):
    module, _, folder = exports()
    lr_png = module.encode_file(smooth_image(tmp_path / "photo.png"))
    (tmp_path / "photo.hr.png").write_bytes(b"mine")
    assert onnx_decode.main([str(lr_png), "--model", str(folder)]) == 2
    assert capsys.readouterr().err.splitlines()[0] == (f"onnx_decode: error: {tmp_path / 'photo.hr.png'}: already "
                                                       "exists; pass --overwrite (overwrite=True) to replace it")
    assert (tmp_path / "photo.hr.png").read_bytes() == b"mine"
    assert onnx_decode.main([str(lr_png), "--model", str(folder), "--overwrite"]) == 0
    assert Image.open(tmp_path / "photo.hr.png").size == (64, 64)
    assert onnx_decode.main([str(lr_png), "--model", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"onnx_decode: error: {tmp_path / 'nowhere'}: no such folder (--model names the folder grain export --onnx "
        "wrote)")


@pytest.mark.slow  # the paper preset: two 1024-px traces and onnxruntime runs, minutes on a CPU
def test_the_paper_preset_exports_and_runs_in_onnxruntime(tmp_path):
    torch.manual_seed(0)
    grain = GRAIN("paper-1024-lr16")
    start = time.perf_counter()
    written = export_onnx(grain, tmp_path)
    export_seconds = time.perf_counter() - start
    sizes = {path.name: path.stat().st_size for path in written}
    encoder, decoder = session(tmp_path / "encoder.onnx"), session(tmp_path / "decoder.onnx")
    assert [item.shape for item in encoder.get_inputs()] == [["batch", 3, 1024, 1024]]
    assert [item.shape for item in decoder.get_inputs()] == [["batch", 3, 16, 16]]
    lr, levels, _ = encoder.run(None, {"hr": np.zeros((2, 3, 1024, 1024), np.float32)})
    assert lr.shape == levels.shape == (2, 3, 16, 16) and levels.dtype == np.uint8
    start = time.perf_counter()
    (hr,) = decoder.run(None, {"lr": lr[:1]})
    decode_seconds = time.perf_counter() - start
    assert hr.shape == (1, 3, 1024, 1024) and np.isfinite(hr).all() and np.abs(hr).max() <= 1
    print(f"paper-1024-lr16: export {export_seconds:.0f} s, onnxruntime decode (batch 1) {decode_seconds:.0f} s, "
          + ", ".join(f"{name} {size / 2**20:.1f} MiB" for name, size in sizes.items()))
