"""`grain encode` / `grain decode` on hostile input (issue 10): extreme aspect ratios, non-finite models, links and
hidden files, an output folder that is the input, interrupted runs, lossy LRs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_images import save_smooth_image  # tests/commands/codec_images.py
from PIL import Image
from safetensors.torch import load_file, save_file

from grain_pl.codec import CodecError, GrainModule
from grain_pl.commands import main as grain_main
from grain_pl.weights.grain_checkpoint import save_grain
from grain_pl.weights.io import CheckpointError

PRESET = "tiny-32-lr8"


@pytest.fixture(scope="module")
def nan_model_file(model_file, tmp_path_factory):
    """The tiny model with one NaN weight, written past the export check (as a diverged run's file would be)."""
    from safetensors import safe_open

    with safe_open(str(model_file), "pt") as handle:
        metadata = handle.metadata()
    state = load_file(model_file)
    key = next(key for key in state if key.startswith("encoder.") and state[key].is_floating_point())
    state[key].view(-1)[0] = float("nan")
    path = tmp_path_factory.mktemp("nan") / "diverged.safetensors"
    save_file(state, str(path), metadata)
    return path


def run(capsys, *argv) -> tuple[int, str, list[str]]:
    code = grain_main([str(item) for item in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


# ----- item 1: a 2 KB PNG of 1 x 1,000,000 pixels -----

def test_an_extreme_aspect_png_is_cropped_without_a_memory_blow_up(model_file, tmp_path, capsys, monkeypatch):
    thin = tmp_path / "thin.png"
    Image.new("RGB", (1, 1_000_000), (200, 30, 40)).save(thin)
    assert thin.stat().st_size < 8000
    original = Image.Image.resize

    def bounded(self, size, *args, **kwargs):  # fails before Pillow allocates, as the old 32 x 32,000,000 did
        assert size[0] * size[1] <= 1 << 22, f"asked Pillow for {size}"
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", bounded)
    code, out, err = run(capsys, "encode", thin, "--model", model_file, "--resize", "center_crop")
    assert (code, err) == (0, []) and "encoded 1 file(s)" in out
    with Image.open(tmp_path / "thin.lr.png") as lr:
        assert lr.size == (8, 8)


def test_a_resize_over_the_memory_limit_is_one_line_naming_the_file(model_file, tmp_path, capsys, monkeypatch):
    import grain_pl.io.images as images

    monkeypatch.setattr(images, "MAX_RESIZE_PIXELS", 600)
    wide = save_smooth_image(tmp_path / "wide.png", 48, 32)
    code, _, err = run(capsys, "encode", wide, "--model", model_file, "--resize", "resize")
    assert code == 2 and err[0].startswith(f"grain encode: error: {wide}: 48x32 is too extreme to bring to 32x32")


# ----- item 2: non-finite weights -----

def test_a_model_with_nan_weights_is_refused_naming_it(nan_model_file, tmp_path, capsys):
    image = save_smooth_image(tmp_path / "photo.png")
    code, _, err = run(capsys, "encode", image, "--model", nan_model_file)
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"grain encode: error: {nan_model_file}: the model's tensor encoder.")
    assert "NaN or infinite" in err[0] and not (tmp_path / "photo.lr.png").exists()
    with pytest.raises(CheckpointError, match="diverged.safetensors: the model's tensor"):
        GrainModule.from_checkpoint(nan_model_file)


def test_non_finite_outputs_are_an_error_not_black_images(model_file, tmp_path):
    module = GrainModule.from_checkpoint(model_file)
    lr_png = module.encode_file(save_smooth_image(tmp_path / "photo.png"))
    with torch.no_grad():
        for parameter in module.grain.decoder.parameters():  # broken after loading
            parameter.fill_(float("inf"))
    with pytest.raises(ValueError, match=r"model tiny\.safetensors \(tiny-32-lr8\): decoding gave NaN or infinite"):
        module.decode_file(lr_png, tmp_path / "hr.png")
    assert not (tmp_path / "hr.png").exists()


def test_exporting_non_finite_weights_is_refused(tmp_path):
    grain = GrainModule(network=PRESET).grain
    with torch.no_grad():
        next(grain.decoder.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match=r"model\.safetensors: refusing to write a model whose tensor decoder\."):
        save_grain(grain, tmp_path / "model.safetensors")
    assert not (tmp_path / "model.safetensors").exists()


def test_exporting_a_prior_with_non_finite_weights_is_refused(tmp_path):
    from grain_pl.networks.stylegan2 import StyleGAN2Generator
    from grain_pl.weights.stylegan2_rosinality import export_rosinality

    generator = StyleGAN2Generator(32, style_dim=32, n_mlp=2, channel_max=32)
    with torch.no_grad():
        next(generator.parameters()).view(-1)[0] = float("inf")
    with pytest.raises(ValueError, match=r"prior\.pt: refusing to write a model whose tensor g_ema\."):
        export_rosinality(generator, None, torch.zeros(32), tmp_path / "prior.pt")
    assert not (tmp_path / "prior.pt").exists()


# ----- items 3 and 5: what a folder run lists, and its own outputs -----

def test_links_and_hidden_files_are_followed_or_reported(model_file, tmp_path, capsys):
    source, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    save_smooth_image(source / "a.png")
    save_smooth_image(elsewhere / "b.png", seed=1)
    save_smooth_image(source / ".hidden.png", seed=2)
    (source / "linked").symlink_to(elsewhere)
    (source / "dangling.png").symlink_to(tmp_path / "gone.png")
    code, out, err = run(capsys, "encode", source, "-o", tmp_path / "lr", "--model", model_file)
    assert (code, err) == (0, [])
    assert (tmp_path / "lr" / "linked" / "b.png").is_file()
    summary = out.splitlines()[-1]
    assert summary.startswith("encoded 2 file(s) with tiny.safetensors (tiny-32-lr8); skipped 2: ")
    assert "1 hidden, name starting with '.'" in summary and "1 broken symbolic link" in summary


def test_the_input_folder_as_output_is_refused(model_file, tmp_path, capsys):
    source = tmp_path / "photos"
    save_smooth_image(source / "a.png")
    before = (source / "a.png").read_bytes()
    for command in ("encode", "decode"):
        code, _, err = run(capsys, command, source, "-o", source, "--model", model_file, "--overwrite")
        assert code == 2 and err == [f"grain {command}: error: {source}: is both the input and the output folder; "
                                     "the outputs would replace or mix with the inputs: choose another -o/--output"]
    assert (source / "a.png").read_bytes() == before and sorted(source.iterdir()) == [source / "a.png"]
    code, out, err = run(capsys, "encode", source, "-o", source / "lr", "--model", model_file)
    code, out, err = run(capsys, "encode", source, "-o", source / "lr", "--model", model_file, "--overwrite")
    assert (code, err) == (0, []) and "encoded 1 file(s)" in out and "skipped 1: 1 output folder" in out


def test_several_inputs_and_an_image_named_output_is_refused(model_file, tmp_path, capsys):
    one, two = save_smooth_image(tmp_path / "one.png"), save_smooth_image(tmp_path / "two.png", seed=1)
    code, _, err = run(capsys, "encode", one, two, "-o", tmp_path / "x.png", "--model", model_file)
    assert code == 2 and err == [f"grain encode: error: {tmp_path / 'x.png'}: 2 inputs need an output folder, but "
                                 "this looks like an image file name; end it with / to mean a folder"]
    assert not (tmp_path / "x.png").exists()
    code, _, err = run(capsys, "encode", one, "-o", one, "--model", model_file, "--overwrite")
    assert code == 2 and "is the input itself" in err[0]


# ----- item 11: a re-run after an interruption -----

def test_skip_existing_completes_an_interrupted_run(model_file, tmp_path, capsys):
    source = tmp_path / "photos"
    for index in range(3):
        save_smooth_image(source / f"{index}.png", seed=index)
    module = GrainModule.from_checkpoint(model_file)

    def interrupt(source, destination, error):
        raise KeyboardInterrupt  # as Ctrl-C after the first file

    with pytest.raises(KeyboardInterrupt):
        module.encode_paths([source], tmp_path / "lr", on_result=interrupt)
    assert [path.name for path in (tmp_path / "lr").iterdir()] == ["0.png"]  # no partial file left
    first = (tmp_path / "lr" / "0.png").read_bytes()
    code, out, err = run(capsys, "encode", source, "-o", tmp_path / "lr", "--model", model_file, "--skip-existing")
    assert (code, err) == (0, [])
    assert out.splitlines()[-1] == (f"encoded 2 file(s) with tiny.safetensors (tiny-32-lr8); skipped 1: 1 existing "
                                    f"output (skip_existing) ({tmp_path / 'lr' / '0.png'})")
    assert (tmp_path / "lr" / "0.png").read_bytes() == first
    with pytest.raises(SystemExit):  # argparse: the two exclude each other
        grain_main(["encode", str(source), "-o", str(tmp_path / "lr"), "--model", str(model_file), "--overwrite",
                    "--skip-existing"])


# ----- item 10: LRs that cannot be what encode wrote -----

@pytest.fixture
def lr_levels(model_file, tmp_path):
    module = GrainModule.from_checkpoint(model_file)
    return np.asarray(module.encode_image(save_smooth_image(tmp_path / "photo.png")))


@pytest.mark.parametrize("case", ["alpha", "jpeg", "sixteen_bit", "lossy_webp"])
def test_a_lossy_lr_is_refused_unless_allowed(model_file, lr_levels, tmp_path, capsys, case):
    if case == "alpha":
        rgba = np.concatenate([lr_levels, np.full((8, 8, 1), 255, np.uint8)], axis=2)
        rgba[0, 0, 3] = 128
        path = tmp_path / "lr.png"
        reason = "it has transparent pixels (alpha < 255), which decode would composite on white"
        Image.fromarray(rgba).save(path)
    elif case == "jpeg":
        path, reason = tmp_path / "lr.jpg", "JPEG is a lossy format"
        Image.fromarray(lr_levels).save(path, quality=95)
    elif case == "lossy_webp":
        path, reason = tmp_path / "lr.webp", "lossy WebP"
        Image.fromarray(lr_levels).save(path, quality=95)
    else:
        import zlib

        path, reason = tmp_path / "lr.png", "16 bits per channel (encode writes 8)"
        rows = b"".join(b"\x00" + (row.astype(">u2") * 257).tobytes() for row in lr_levels.reshape(8, 24))

        def chunk(kind, data):
            return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", (8).to_bytes(4, "big") * 2 + bytes([16, 2, 0, 0, 0]))
                         + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    code, _, err = run(capsys, "decode", path, "-o", tmp_path / "hr.png", "--model", model_file)
    assert code == 2 and err[0] == (f"grain decode: error: {path}: cannot be the exact LR that grain encode wrote: "
                                    f"{reason}; decoding it would not be faithful (pass --allow-lossy-lr, "
                                    "allow_lossy_lr=True, to decode it anyway)")
    assert not (tmp_path / "hr.png").exists()
    code, _, err = run(capsys, "decode", path, "-o", tmp_path / "hr.png", "--model", model_file, "--allow-lossy-lr")
    assert (code, err) == (0, []) and (tmp_path / "hr.png").is_file()


def test_exact_lr_variants_still_decode(model_file, lr_levels, tmp_path):
    module = GrainModule.from_checkpoint(model_file)
    Image.fromarray(lr_levels).save(tmp_path / "plain.png")
    opaque = np.concatenate([lr_levels, np.full((8, 8, 1), 255, np.uint8)], axis=2)
    Image.fromarray(opaque).save(tmp_path / "opaque.png")  # an alpha channel, every pixel opaque: exact
    Image.fromarray(lr_levels).save(tmp_path / "lossless.webp", lossless=True)
    expected = module.decode_image(tmp_path / "plain.png")
    for name in ("opaque.png", "lossless.webp"):
        assert np.array_equal(np.asarray(module.decode_image(tmp_path / name)), np.asarray(expected)), name
    with pytest.raises(CodecError, match="transparent pixels"):
        rgba = opaque.copy()
        rgba[..., 3] = 0
        module.decode_image(Image.fromarray(rgba))
