"""`grain upscale`: ordinary thumbnails (PNG, JPEG, WebP of the LR size) -> HR PNGs, with decode's rules for bad
input (sizes, modes, folders, existing outputs, one-line errors), and `GrainModule.upscale_*` in Python."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from codec_images import save_smooth_image  # tests/commands/codec_images.py
from PIL import Image

from grain_pl.codec import CodecError, GrainModule
from grain_pl.commands import build_parser
from grain_pl.commands import codec as codec_cli
from grain_pl.commands import main as grain_main
from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.networks import get_preset
from grain_pl.networks.grain import GRAIN
from grain_pl.weights.grain_checkpoint import save_grain

PRESET = "tiny-32-lr8"


@pytest.fixture(scope="module")
def upscaler_file(tmp_path_factory):
    torch.manual_seed(0)
    config = get_preset(PRESET, encoder="bicubic", hr_parameterisation="bicubic_residual")
    return save_grain(GRAIN(config), tmp_path_factory.mktemp("upscaler") / "upscaler.safetensors", preset=PRESET)


def run(capsys, *argv) -> tuple[int, str, list[str]]:
    code = grain_main([str(item) for item in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def thumbnail(path, size: int = 8, seed: int = 0, **save_options):
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **save_options)
    return path


def test_the_command_is_wired():
    args = build_parser().parse_args(["upscale", "a.jpg", "b/", "-o", "out/", "--model", "m.safetensors",
                                      "--skip-existing", "--batch-size", "2"])
    assert args.run is codec_cli.run_upscale
    assert (args.inputs, args.output, args.skip_existing, args.batch_size) == (["a.jpg", "b/"], "out/", True, 2)


def test_a_jpeg_thumbnail_becomes_an_hr_png(upscaler_file, tmp_path, capsys):
    source = thumbnail(tmp_path / "thumb.jpg", quality=90)
    code, out, err = run(capsys, "upscale", source, "--model", upscaler_file)
    assert (code, err) == (0, [])
    assert f"{source} -> {tmp_path / 'thumb.hr.png'}" in out
    assert out.splitlines()[-1] == "upscaled 1 file(s) with upscaler.safetensors (tiny-32-lr8)"
    with Image.open(tmp_path / "thumb.hr.png") as written:
        assert (written.format, written.mode, written.size) == ("PNG", "RGB", (32, 32))
        pixels = np.asarray(written)
    module = GrainModule.from_checkpoint(upscaler_file)
    with Image.open(source) as image:  # the decoder run on the JPEG's own 8-bit pixels
        levels = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)
    assert np.array_equal(pixels, np.asarray(module.upscale_image(source)))
    expected = to_uint8(module.decode(from_uint8(levels)))
    assert np.array_equal(pixels, expected.permute(1, 2, 0).numpy())


def test_a_folder_of_mixed_formats_keeps_its_layout(upscaler_file, tmp_path, capsys):
    source = tmp_path / "thumbs"
    thumbnail(source / "a.png")
    thumbnail(source / "sub" / "b.jpg", seed=1, quality=80)
    thumbnail(source / "sub" / "c.webp", seed=2, quality=80)
    code, out, err = run(capsys, "upscale", source, "-o", tmp_path / "hr", "--model", upscaler_file,
                         "--batch-size", "2")
    assert (code, err) == (0, [])
    written = sorted(path.relative_to(tmp_path / "hr").as_posix() for path in (tmp_path / "hr").rglob("*"))
    assert written == ["a.png", "sub", "sub/b.png", "sub/c.png"]
    for name in ("a.png", "sub/b.png", "sub/c.png"):
        with Image.open(tmp_path / "hr" / name) as image:
            assert image.size == (32, 32)
    assert out.splitlines()[-1] == "upscaled 3 file(s) with upscaler.safetensors (tiny-32-lr8)"


def test_bad_thumbnails_are_one_line_each_and_the_run_goes_on(upscaler_file, tmp_path, capsys):
    source = tmp_path / "thumbs"
    thumbnail(source / "good.jpg", quality=90)
    thumbnail(source / "big.png", size=16)
    rgba = np.full((8, 8, 4), 200, np.uint8)
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(source / "transparent.png")
    Image.fromarray(np.zeros((8, 8), np.float32), mode="F").save(source / "float.tif")
    code, out, err = run(capsys, "upscale", source, "-o", tmp_path / "hr", "--model", upscaler_file)
    assert code == 2
    assert err == [
        f"grain upscale: error: {source / 'big.png'}: expected a 8x8 thumbnail for upscaler.safetensors "
        "(tiny-32-lr8), got 16x16",
        f"grain upscale: error: {source / 'float.tif'}: cannot be upscaled as it is: mode F (more than 8 bits per "
        "channel); save it as an 8-bit RGB image without transparency first",
        f"grain upscale: error: {source / 'transparent.png'}: cannot be upscaled as it is: it has transparent "
        "pixels (alpha < 255), which decode would composite on white; save it as an 8-bit RGB image without "
        "transparency first",
        "grain upscale: error: 3 of 4 file(s) failed (see above); 1 written",
    ]
    assert [path.name for path in (tmp_path / "hr").iterdir()] == ["good.png"]


def test_outputs_never_replace_inputs_or_existing_files(upscaler_file, tmp_path, capsys):
    source = tmp_path / "thumbs"
    image = thumbnail(source / "a.png")
    before = image.read_bytes()
    code, _, err = run(capsys, "upscale", source, "-o", source, "--model", upscaler_file, "--overwrite")
    assert code == 2 and err == [f"grain upscale: error: {source}: is both the input and the output folder; the "
                                 "outputs would replace or mix with the inputs: choose another -o/--output"]
    code, _, err = run(capsys, "upscale", image, "-o", image, "--model", upscaler_file, "--overwrite")
    assert code == 2 and err == [f"grain upscale: error: {image}: is the input itself; choose another output name"]
    assert image.read_bytes() == before and sorted(source.iterdir()) == [image]
    target = source / "a.hr.png"
    target.write_bytes(b"precious")
    code, _, err = run(capsys, "upscale", image, "--model", upscaler_file)
    assert code == 2 and err[0] == (f"grain upscale: error: {target}: already exists; pass --overwrite "
                                    "(overwrite=True) to replace it")
    assert target.read_bytes() == b"precious"
    code, _, err = run(capsys, "upscale", image, "--model", upscaler_file, "--overwrite")
    assert (code, err) == (0, []) and target.read_bytes().startswith(b"\x89PNG")


def test_a_model_with_a_learned_encoder_runs_with_a_note(model_file, tmp_path, capsys):
    source = thumbnail(tmp_path / "thumb.png")
    code, out, err = run(capsys, "upscale", source, "-o", tmp_path / "hr.png", "--model", model_file)
    assert code == 0 and (tmp_path / "hr.png").is_file()
    assert err == ["grain upscale: note: tiny.safetensors (tiny-32-lr8) has a learned encoder: it was trained to "
                   "decode the LRs it makes itself (grain encode), not ordinary thumbnails; upscaling anyway (a "
                   "model trained with encoder: bicubic is made for them)"]
    assert not GrainModule.from_checkpoint(model_file).is_upscaler


def test_in_python(upscaler_file, tmp_path):
    module = GrainModule.from_checkpoint(upscaler_file)
    assert module.is_upscaler
    source = thumbnail(tmp_path / "thumbs" / "thumb.webp", quality=70)
    image = module.upscale_image(source)
    assert (image.mode, image.size) == ("RGB", (32, 32))
    written = module.upscale_file(source)
    assert written == tmp_path / "thumbs" / "thumb.hr.png"
    assert np.array_equal(np.asarray(Image.open(written)), np.asarray(image))
    with Image.open(source) as opened:
        assert np.array_equal(np.asarray(module.upscale_image(opened)), np.asarray(image))
    with pytest.raises(CodecError, match=r"<image>: expected a 8x8 thumbnail"):
        module.upscale_image(Image.new("RGB", (9, 8)))
    written.unlink()
    report = module.upscale_folder(tmp_path / "thumbs", tmp_path / "out")
    assert report.ok and report.written == [(source, tmp_path / "out" / "thumb.png")]


def test_the_upscaler_encodes_the_bicubic_thumbnail(upscaler_file, tmp_path, capsys):
    """`grain encode` with an upscaler writes the thumbnail anyone makes, and `grain upscale` of it equals
    `grain decode` of it."""
    from grain_pl.evaluation import decode_image_bytes, resize_baseline

    image = save_smooth_image(tmp_path / "photo.png")
    assert grain_main(["encode", str(image), "--model", str(upscaler_file)]) == 0
    hr = torch.from_numpy(np.array(Image.open(image))).permute(2, 0, 1).contiguous()
    reference = decode_image_bytes(resize_baseline(hr, 8, "bicubic").payload)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "photo.lr.png")), reference.permute(1, 2, 0).numpy())
    assert grain_main(["decode", str(tmp_path / "photo.lr.png"), "-o", str(tmp_path / "d.png"), "--model",
                       str(upscaler_file)]) == 0
    assert grain_main(["upscale", str(tmp_path / "photo.lr.png"), "-o", str(tmp_path / "u.png"), "--model",
                       str(upscaler_file)]) == 0
    assert (tmp_path / "u.png").read_bytes() == (tmp_path / "d.png").read_bytes()
    capsys.readouterr()


def test_an_lr_png_from_before_the_encoder_setting_decodes_without_a_warning(model_file, tmp_path):
    """A PNG whose stored config lacks a setting added since (here `encoder`) was written with its default."""
    import json
    import warnings

    from grain_pl.codec import lr_png_bytes

    module = GrainModule.from_checkpoint(model_file)
    lr = module.encode_image(save_smooth_image(tmp_path / "photo.png"))
    text = module.png_metadata()
    old = {key: value for key, value in json.loads(text["config"]).items() if key != "encoder"}
    (tmp_path / "old.lr.png").write_bytes(lr_png_bytes(lr, {**text, "config": json.dumps(old)}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.decode_file(tmp_path / "old.lr.png")
    other = {**old, "encoder": "bicubic"}
    (tmp_path / "other.lr.png").write_bytes(lr_png_bytes(lr, {**text, "config": json.dumps(other)}))
    with pytest.warns(UserWarning, match="encoded by a model with another configuration"):
        module.decode_file(tmp_path / "other.lr.png")
