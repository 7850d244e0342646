"""The codec's Python API on a tiny real GRAIN (random weights): shapes, bit-exact LR PNGs, deterministic decoding,
metadata, overwrite refusal, bad inputs named, stage checkpoints, folders."""

from __future__ import annotations

import json
import re
from io import BytesIO

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch.utils.data import DataLoader

from grain_pl.codec import (
    CodecError,
    GrainModule,
    LRImageDataset,
    lr_png_bytes,
    read_png_text,
)
from grain_pl.io.images import from_uint8, to_uint8
from grain_pl.networks import get_preset
from grain_pl.networks.stylegan2 import StyleGAN2Generator
from grain_pl.weights.grain_checkpoint import save_grain
from grain_pl.weights.io import CheckpointError
from grain_pl.weights.stylegan2_rosinality import export_rosinality

PRESET = "tiny-32-lr8"  # HR 32x32, LR 8x8


def smooth_image(width: int = 32, height: int = 32, seed: int = 0) -> Image.Image:
    """A smooth random RGB image (a coarse random grid, bicubically upsampled)."""
    coarse = np.random.default_rng(seed).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


def pixels(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    grain = GrainModule(network=PRESET).grain
    return save_grain(grain, tmp_path_factory.mktemp("model") / "tiny.safetensors", preset=PRESET)


@pytest.fixture(scope="module")
def module(model_file):
    return GrainModule.from_checkpoint(model_file)


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "photo.png"
    smooth_image().save(path)
    return path


# ----- the tensor API -----

def test_from_checkpoint_gives_the_saved_network_in_eval_mode(module, model_file):
    assert module.config == get_preset(PRESET)
    assert (module.preset, module.checkpoint_name) == (PRESET, "tiny.safetensors")
    assert not module.grain.training
    torch.manual_seed(0)
    fresh = GrainModule(network=PRESET)  # built exactly as the saved one
    assert torch.equal(module.grain.fusion.head[0].weight, fresh.grain.fusion.head[0].weight)


def test_encode_gives_exact_8_bit_values_and_decode_a_clamped_image(module):
    hr = torch.rand(2, 3, 32, 32) * 2 - 1
    lr = module.encode(hr)
    assert lr.shape == (2, 3, 8, 8)
    assert torch.equal(from_uint8(to_uint8(lr)), lr)  # a PNG can hold it exactly
    out = module.decode(lr)
    assert out.shape == (2, 3, 32, 32) and out.min() >= -1 and out.max() <= 1
    assert module.encode(hr[0]).shape == (3, 8, 8)  # one image without a batch dimension
    assert torch.equal(module.decode(lr[0]), module.decode(lr[:1])[0])
    with pytest.raises(ValueError, match=r"hr must have shape \(B, 3, 32, 32\)"):
        module.encode(torch.zeros(1, 3, 16, 16))


def test_modes_are_restored_after_use(module):
    module.grain.train()
    lr = module.encode(torch.zeros(1, 3, 32, 32))
    assert torch.equal(from_uint8(to_uint8(lr)), lr)  # eval-mode rounding even though the module trains
    assert module.grain.training
    module.grain.eval()


def test_trainer_predict_batch_decodes(module, tmp_path):
    paths = []
    for index in range(3):
        paths.append(tmp_path / f"{index}.png")
        module.encode_image(smooth_image(seed=index)).save(paths[-1])
    loader = DataLoader(LRImageDataset(paths, module.lr_size), batch_size=2)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path))
    batches = trainer.predict(module, loader)
    assert [batch["hr"].shape[0] for batch in batches] == [2, 1]
    assert batches[1]["path"] == [str(paths[2])]
    expected = module.decode(module.load_lr(paths[2]))
    assert torch.allclose(batches[1]["hr"][0], expected, atol=1e-5)


# ----- files: exactness, determinism, metadata, overwrite -----

def test_lr_png_holds_exactly_the_encoded_tensor(module, image_file, tmp_path):
    hr = from_uint8(pixels(Image.open(image_file)))
    lr = module.encode(hr)
    written = module.encode_file(image_file, tmp_path / "photo.lr.png")
    with Image.open(written) as png:
        assert (png.format, png.mode, png.size) == ("PNG", "RGB", (8, 8))
        assert torch.equal(from_uint8(pixels(png)), lr)
    assert torch.equal(pixels(module.encode_image(image_file)), to_uint8(lr))
    # what is decoded from the file is what decoding the tensor gives
    assert torch.equal(pixels(module.decode_image(written)), to_uint8(module.decode(lr)))


def test_lr_png_is_the_smallest_pillow_writes_and_carries_the_metadata(module, image_file, tmp_path):
    written = module.encode_file(image_file, tmp_path / "photo.lr.png")
    text = read_png_text(written)
    assert text["grain_pl"] and text["preset"] == PRESET and text["model"] == "tiny.safetensors"
    assert json.loads(text["config"])["lr_size"] == 8
    lr_uint8 = pixels(Image.open(written))
    plain = lr_png_bytes(lr_uint8)
    for level in range(10):
        buffer = BytesIO()
        Image.open(written).convert("RGB").save(buffer, format="PNG", compress_level=level)
        assert len(plain) <= len(buffer.getvalue())
    assert lr_png_bytes(lr_uint8) == plain  # no timestamp: same pixels, same bytes


def test_decoding_is_deterministic_across_runs(module, model_file, image_file, tmp_path):
    lr_png = module.encode_file(image_file, tmp_path / "photo.lr.png")
    first = module.decode_file(lr_png, tmp_path / "a.png").read_bytes()
    again = GrainModule.from_checkpoint(model_file).decode_file(lr_png, tmp_path / "b.png").read_bytes()
    assert first == again
    assert read_png_text(tmp_path / "a.png")["model"] == "tiny.safetensors"
    with Image.open(tmp_path / "a.png") as hr:
        assert (hr.mode, hr.size) == ("RGB", (32, 32))


def test_default_names_sit_next_to_the_source(module, image_file):
    lr_png = module.encode_file(image_file)
    assert lr_png == image_file.with_name("photo.lr.png")
    assert module.decode_file(lr_png) == image_file.with_name("photo.hr.png")


def test_an_existing_output_is_never_overwritten(module, image_file, tmp_path):
    target = tmp_path / "out.png"
    target.write_bytes(b"precious")
    with pytest.raises(CodecError, match=r"out\.png: already exists; pass --overwrite"):
        module.encode_file(image_file, target)
    assert target.read_bytes() == b"precious"
    module.encode_file(image_file, target, overwrite=True)
    assert target.read_bytes().startswith(b"\x89PNG")
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []  # no temp files left


# ----- input images: conversions and errors -----

def encoded(module, image: Image.Image) -> torch.Tensor:
    return to_uint8(module.encode(from_uint8(pixels(image))))


def test_converted_modes_encode_like_their_rgb_version(module, tmp_path):
    rgb = smooth_image()
    gray = rgb.convert("L")
    gray.save(tmp_path / "gray.png")
    assert torch.equal(pixels(module.encode_image(tmp_path / "gray.png")), encoded(module, gray.convert("RGB")))

    rgba = rgb.convert("RGBA")
    alpha = np.asarray(rgba).copy()
    alpha[:16, :, 3] = 0  # top half transparent -> white
    Image.fromarray(alpha).save(tmp_path / "rgba.png")
    on_white = np.asarray(rgb).copy()
    on_white[:16] = 255
    assert torch.equal(pixels(module.encode_image(tmp_path / "rgba.png")),
                       encoded(module, Image.fromarray(on_white)))

    palette = rgb.quantize(colors=16)
    palette.save(tmp_path / "palette.png")
    assert torch.equal(pixels(module.encode_image(tmp_path / "palette.png")),
                       encoded(module, palette.convert("RGB")))

    levels16 = np.asarray(gray).astype(np.uint16) * 257  # 8-bit levels spread over 16 bits
    Image.fromarray(levels16).save(tmp_path / "sixteen.png")
    with Image.open(tmp_path / "sixteen.png") as check:
        assert check.mode.startswith("I")  # really a 16-bit file
    assert torch.equal(pixels(module.encode_image(tmp_path / "sixteen.png")), encoded(module, gray.convert("RGB")))


def test_exif_orientation_is_applied(module, tmp_path):
    upright = smooth_image(seed=3)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes for orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    stored.save(tmp_path / "rotated.png", exif=exif)
    assert torch.equal(pixels(module.encode_image(tmp_path / "rotated.png")), encoded(module, upright))


def test_wrong_size_is_an_error_unless_a_policy_is_given(module, tmp_path):
    path = tmp_path / "wide.png"
    smooth_image(48, 24).save(path)
    with pytest.raises(CodecError, match=r"wide\.png: expected 32x32, got 48x24; pass --resize") as error:
        module.encode_file(path, tmp_path / "wide.lr.png")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "wide.lr.png").exists()
    assert module.encode_image(path, resize="resize").size == (8, 8)
    assert module.encode_image(path, resize="center_crop").size == (8, 8)
    with pytest.raises(ValueError, match="resize must be one of"):
        module.encode_image(path, resize="stretch")
    exact = smooth_image()  # the right size is never resampled, whatever the policy
    assert torch.equal(pixels(module.encode_image(exact, resize="resize")), pixels(module.encode_image(exact)))


@pytest.mark.parametrize("case", ["truncated", "corrupt", "empty", "missing", "folder"])
def test_unreadable_inputs_are_errors_naming_the_file(module, image_file, tmp_path, case):
    path = tmp_path / f"{case}.png"
    if case == "truncated":
        data = image_file.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif case == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "folder":
        path.mkdir()
    with pytest.raises(CodecError) as error:
        module.encode_file(path, tmp_path / "out.png")
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("limit", [600, 100])  # 32x32 = 1024 pixels: Pillow warns above 1x, raises above 2x
def test_decompression_bombs_are_refused(module, image_file, tmp_path, monkeypatch, limit):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(CodecError, match=rf"^{re.escape(str(image_file))}: refusing to decode a possible "
                                         "decompression bomb"):
        module.encode_file(image_file, tmp_path / "out.png")


def test_an_lr_of_the_wrong_size_is_an_error_naming_it(module, tmp_path):
    path = tmp_path / "big.lr.png"
    smooth_image(16, 16).save(path)
    with pytest.raises(CodecError, match=r"big\.lr\.png: expected a 8x8 LR image for tiny\.safetensors "
                                         r"\(tiny-32-lr8\), got 16x16"):
        module.decode_file(path, tmp_path / "big.hr.png")


def test_an_lr_of_another_model_gets_a_warning(module, tmp_path):
    other = {**json.loads(module.png_metadata()["config"]), "hr_size": 64}
    path = tmp_path / "other.lr.png"
    path.write_bytes(lr_png_bytes(module.encode_image(smooth_image()), {"config": json.dumps(other)}))
    with pytest.warns(UserWarning, match=r"other\.lr\.png: encoded by a model with another configuration"):
        module.decode_file(path, tmp_path / "other.hr.png")


# ----- folders -----

def test_folder_encode_keeps_the_layout_and_goes_past_bad_files(module, tmp_path):
    source = tmp_path / "photos"
    (source / "a" / "b").mkdir(parents=True)
    smooth_image(seed=1).save(source / "one.png")
    smooth_image(seed=2).save(source / "a" / "b" / "two.jpg", quality=95)
    (source / "a" / "broken.png").write_bytes(b"not an image")
    smooth_image(40, 40).save(source / "a" / "wrong.png")
    seen = []
    report = module.encode_paths([source], tmp_path / "lr", batch_size=2,
                                 on_result=lambda src, dst, error: seen.append((src.name, error is None)))
    written = sorted(dst.relative_to(tmp_path / "lr").as_posix() for _, dst in report.written)
    assert written == ["a/b/two.png", "one.png"]
    assert sorted(str(error).split(":")[0] for _, error in report.failed) == [
        str(source / "a" / "broken.png"), str(source / "a" / "wrong.png")]
    assert not report.ok and sorted(seen) == [("broken.png", False), ("one.png", True), ("two.jpg", True),
                                              ("wrong.png", False)]

    decoded = module.decode_paths([tmp_path / "lr"], tmp_path / "hr")
    assert sorted(dst.relative_to(tmp_path / "hr").as_posix() for _, dst in decoded.written) == [
        "a/b/two.png", "one.png"]
    again = module.encode_paths([source], tmp_path / "lr")  # everything exists now: refused, files kept
    assert again.written == [] and sum("already exists" in str(error) for _, error in again.failed) == 2


def test_folders_need_an_output_and_clashing_outputs_are_reported(module, tmp_path):
    source = tmp_path / "photos"
    source.mkdir()
    smooth_image().save(source / "x.png")
    smooth_image().save(source / "x.jpg")
    with pytest.raises(CodecError, match=r"photos: a folder input needs -o/--output"):
        module.encode_paths([source])
    report = module.encode_paths([source], tmp_path / "lr")
    assert len(report.written) == 1
    assert "is also the output of" in str(report.failed[0][1])
    with pytest.raises(CodecError, match=r"out\.jpg: the output must be a \.png file"):
        module.encode_paths([source / "x.png"], tmp_path / "out.jpg")


# ----- stage checkpoints -----

@pytest.fixture(scope="module")
def stage_checkpoint(tmp_path_factory):
    """A FinalStage trained for one step on random images, saved by the trainer; its prior file next to it."""
    from grain_pl.losses import LossWeights
    from grain_pl.stages import FinalStage

    folder = tmp_path_factory.mktemp("stage")
    config = get_preset(PRESET)
    torch.manual_seed(1)
    generator = StyleGAN2Generator(config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                   channel_max=config.generator_channel_max)
    prior = export_rosinality(generator, None, torch.randn(config.style_dim), folder / "prior.pt")
    stage = FinalStage(network=PRESET, prior_path=str(prior), metrics_lpips=False,
                       loss_weights=LossWeights(lpips=0.0, identity=0.0, adversarial=0.0, lr=0.1))
    images = [{"hr": torch.rand(3, 32, 32) * 2 - 1} for _ in range(2)]
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(folder))
    trainer.fit(stage, train_dataloaders=DataLoader(images, batch_size=2))
    trainer.save_checkpoint(folder / "final.ckpt")
    return folder / "final.ckpt", prior, stage.grain.eval()


def test_a_stage_checkpoint_loads_with_the_prior_it_names(stage_checkpoint):
    path, _, trained = stage_checkpoint
    module = GrainModule.from_checkpoint(path)
    assert (module.preset, module.checkpoint_name) == (PRESET, "final.ckpt")
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.inference_mode():
        expected = trained.decode(lr).hr_out.clamp(-1, 1)
    assert torch.equal(module.decode(lr), expected)


def test_a_stage_checkpoint_without_its_prior_is_a_clear_error(stage_checkpoint, tmp_path):
    path, prior, _ = stage_checkpoint
    moved = tmp_path / "moved-prior.pt"
    prior.rename(moved)
    try:
        with pytest.raises(CheckpointError, match=rf"final\.ckpt: its StyleGAN2 prior {re.escape(str(prior))} \(from "
                                                  r"hyper_parameters\.prior_path\) does not exist; pass prior_path"):
            GrainModule.from_checkpoint(path)
        module = GrainModule.from_checkpoint(path, prior_path=moved)
        assert module.decode(torch.zeros(1, 3, 8, 8)).shape == (1, 3, 32, 32)
    finally:
        moved.rename(prior)


def test_a_stage1_checkpoint_needs_a_prior(tmp_path):
    from grain_pl.losses import LossWeights
    from grain_pl.stages import Stage1

    stage = Stage1(network=PRESET, metrics_lpips=False, loss_weights=LossWeights(lpips=0.0, identity=0.0))
    state = {key: value for key, value in stage.state_dict().items() if not key.startswith("grain.generator.")}
    torch.save({"state_dict": state, "hyper_parameters": dict(stage.hparams)}, tmp_path / "stage1.ckpt")
    with pytest.raises(CheckpointError, match=r"stage1\.ckpt: the checkpoint names no StyleGAN2 prior"):
        GrainModule.from_checkpoint(tmp_path / "stage1.ckpt")


@pytest.mark.parametrize("content", [b"garbage", None])
def test_unusable_checkpoints_are_errors_naming_the_file(tmp_path, content):
    path = tmp_path / "model.ckpt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"model\.ckpt: "):
        GrainModule.from_checkpoint(path)


def test_a_lightning_checkpoint_of_the_module_itself_needs_no_prior(module, tmp_path):
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}, tmp_path / "m.ckpt")
    again = GrainModule.from_checkpoint(tmp_path / "m.ckpt")
    lr = torch.rand(1, 3, 8, 8) * 2 - 1
    assert torch.equal(again.decode(lr), module.decode(lr))
