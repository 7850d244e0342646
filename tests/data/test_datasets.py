"""Listing, decoding (modes, EXIF, bad files), size policies and the dataset item format."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from grain_pl.data.datasets import (
    BadImageFileError,
    ImageFolderDataset,
    find_bad_image_files,
    list_image_files,
    load_rgb_image,
    warn_about_skipped_files,
)
from grain_pl.io.images import pil_to_signed, signed_to_pil

EXIF_ORIENTATION_TAG = 0x0112


def _random_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save_exif_rotated_jpeg(path: Path) -> None:
    """40 wide x 24 high, left half red, right half blue, EXIF orientation 6 (display rotated 90 deg clockwise)."""
    pixels = np.zeros((24, 40, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)
    pixels[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=95)


def _save_truncated_png(path: Path) -> None:
    """A PNG whose header is intact but whose pixel data stops halfway."""
    Image.fromarray(_random_rgb(64, 64, seed=1)).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def mixed_folder(tmp_path: Path) -> Path:
    """One file per case the loader must handle, plus files that must be ignored or reported."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_random_rgb(40, 30)).save(root / "rgb.png")
    Image.fromarray(_random_rgb(40, 30)[..., 0]).save(root / "gray.png")  # mode L
    rgba = np.zeros((30, 40, 4), dtype=np.uint8)
    rgba[..., 0] = 255  # red everywhere, but the left half fully transparent
    rgba[:, 20:, 3] = 255
    Image.fromarray(rgba).save(root / "rgba.png")
    Image.fromarray(_random_rgb(40, 30)).convert("P").save(root / "palette.png")
    deep = np.full((30, 40), 65535, dtype=np.uint16)
    deep[:, :20] = 257 * 100  # 16-bit level 25700 is 8-bit level 100
    Image.fromarray(deep).save(root / "deep.png")  # mode I;16
    _save_exif_rotated_jpeg(root / "rotated.jpg")
    Image.fromarray(_random_rgb(40, 30)).save(root / "sub" / "nested.PNG")  # recursion and upper-case suffix
    _save_truncated_png(root / "truncated.png")
    (root / "empty.jpg").write_bytes(b"")
    (root / "notes.txt").write_text("not an image")
    Image.fromarray(_random_rgb(8, 8)).save(root / ".hidden.png")
    return root


# ---------------------------------------------------------------------------------------------------- listing


def test_listing_is_recursive_sorted_case_insensitive_and_ignores_other_files(mixed_folder: Path) -> None:
    names = [path.relative_to(mixed_folder).as_posix() for path in list_image_files(mixed_folder)]
    assert names == [
        "deep.png",
        "empty.jpg",
        "gray.png",
        "palette.png",
        "rgb.png",
        "rgba.png",
        "rotated.jpg",
        "sub/nested.PNG",
        "truncated.png",
    ]


def test_listing_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        list_image_files(tmp_path / "missing")
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no image files under .*only_text"):
        list_image_files(tmp_path / "only_text")


# ---------------------------------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("name", ["rgb.png", "gray.png", "rgba.png", "palette.png", "deep.png", "sub/nested.PNG"])
def test_every_mode_becomes_8bit_rgb(mixed_folder: Path, name: str) -> None:
    image = load_rgb_image(mixed_folder / name)
    assert image.mode == "RGB"
    assert image.size == (40, 30)


def test_alpha_is_composited_on_white(mixed_folder: Path) -> None:
    pixels = np.asarray(load_rgb_image(mixed_folder / "rgba.png"))
    assert (pixels[:, :20] == 255).all()  # transparent red -> white
    assert (pixels[:, 20:] == (255, 0, 0)).all()  # opaque red stays red


def test_16bit_is_scaled_not_clipped(mixed_folder: Path) -> None:
    pixels = np.asarray(load_rgb_image(mixed_folder / "deep.png"))
    assert (pixels[:, :20] == 100).all()
    assert (pixels[:, 20:] == 255).all()


def test_exif_orientation_is_applied(mixed_folder: Path) -> None:
    image = load_rgb_image(mixed_folder / "rotated.jpg")
    assert image.size == (24, 40)  # stored 40x24, shown transposed
    pixels = np.asarray(image).astype(int)
    # Rotating 90 degrees clockwise brings the stored left (red) half to the top.
    assert pixels[5, 12, 0] > 200 and pixels[5, 12, 2] < 60
    assert pixels[35, 12, 2] > 200 and pixels[35, 12, 0] < 60


@pytest.mark.parametrize("name", ["truncated.png", "empty.jpg", "notes.txt"])
def test_unreadable_files_raise_a_value_error_naming_the_file(mixed_folder: Path, name: str) -> None:
    with pytest.raises(ValueError, match=name) as raised:
        load_rgb_image(mixed_folder / name)
    assert isinstance(raised.value, BadImageFileError)
    assert raised.value.path == str(mixed_folder / name)


def test_header_check_finds_empty_files_and_decode_check_finds_truncated_ones(mixed_folder: Path) -> None:
    paths = list_image_files(mixed_folder)
    assert list(find_bad_image_files(paths, "header")) == [str(mixed_folder / "empty.jpg")]
    assert list(find_bad_image_files(paths, "decode", num_threads=2)) == [
        str(mixed_folder / "empty.jpg"),
        str(mixed_folder / "truncated.png"),
    ]
    assert find_bad_image_files(paths, "none") == {}


def test_skip_warning_gives_count_and_first_paths() -> None:
    bad = {f"/data/bad{i}.png": "OSError: broken" for i in range(7)}
    with pytest.warns(UserWarning) as record:
        warn_about_skipped_files(bad)
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipping 7 unreadable" in message
    assert "/data/bad0.png" in message and "/data/bad4.png" in message
    assert "/data/bad5.png" not in message and "2 more" in message


# ---------------------------------------------------------------------------------------------------- dataset


def test_item_is_signed_float_tensor_and_path(mixed_folder: Path) -> None:
    dataset = ImageFolderDataset([mixed_folder / "rgb.png", mixed_folder / "deep.png"], image_size=16)
    item = dataset[1]
    assert set(item) == {"hr", "path"}
    assert item["path"] == str(mixed_folder / "deep.png")
    hr = item["hr"]
    assert type(hr) is torch.Tensor and hr.dtype == torch.float32 and hr.shape == (3, 16, 16)
    assert hr.min() >= -1.0 and hr.max() <= 1.0


def test_tensor_conversion_round_trips_every_level() -> None:
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = Image.fromarray(np.stack([levels, 255 - levels, levels], axis=-1))
    tensor = pil_to_signed(image)
    assert tensor.min() == -1.0 and tensor.max() == 1.0
    assert np.array_equal(np.asarray(signed_to_pil(tensor)), np.asarray(image))


def test_images_at_the_target_size_are_never_resampled(tmp_path: Path) -> None:
    pixels = _random_rgb(32, 32)
    Image.fromarray(pixels).save(tmp_path / "exact.png")
    for policy in ("error", "resize", "center_crop", "random_crop"):
        hr = ImageFolderDataset([tmp_path / "exact.png"], image_size=32, resize=policy)[0]["hr"]
        assert torch.equal(hr, torch.from_numpy(pixels).permute(2, 0, 1).float() / 127.5 - 1)


def test_resize_error_names_expected_and_given_size_and_file(mixed_folder: Path) -> None:
    dataset = ImageFolderDataset([mixed_folder / "rgb.png"], image_size=32, resize="error")
    with pytest.raises(ValueError, match=r"rgb\.png has size 40x30 .*expected 32x32"):
        dataset[0]


@pytest.mark.parametrize("policy", ["resize", "center_crop", "random_crop"])
def test_resize_policies_give_the_target_size(mixed_folder: Path, policy: str) -> None:
    dataset = ImageFolderDataset([mixed_folder / "rotated.jpg"], image_size=16, resize=policy)
    assert dataset[0]["hr"].shape == (3, 16, 16)


def test_center_crop_keeps_the_middle(tmp_path: Path) -> None:
    pixels = np.zeros((16, 48, 3), dtype=np.uint8)
    pixels[:, 16:32] = 255  # white centre square, black sides
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    hr = ImageFolderDataset([tmp_path / "wide.png"], image_size=16, resize="center_crop")[0]["hr"]
    assert torch.equal(hr, torch.ones(3, 16, 16))


def test_random_crop_and_hflip_vary_between_draws(tmp_path: Path) -> None:
    Image.fromarray(_random_rgb(48, 16)).save(tmp_path / "wide.png")
    crops = ImageFolderDataset([tmp_path / "wide.png"], image_size=16, resize="random_crop")
    assert len({crops[0]["hr"].sum().item() for _ in range(10)}) > 1
    Image.fromarray(_random_rgb(16, 16)).save(tmp_path / "square.png")
    flips = ImageFolderDataset([tmp_path / "square.png"], image_size=16, hflip=True)
    original = ImageFolderDataset([tmp_path / "square.png"], image_size=16)[0]["hr"]
    draws = [flips[0]["hr"] for _ in range(12)]
    assert any(torch.equal(draw, original) for draw in draws)
    assert any(torch.equal(draw, original.flip(-1)) for draw in draws)


def test_skip_substitutes_the_next_readable_file_and_warns_once(mixed_folder: Path) -> None:
    dataset = ImageFolderDataset([mixed_folder / "truncated.png", mixed_folder / "rgb.png"], image_size=16)
    with pytest.warns(UserWarning, match="truncated.png"):
        item = dataset[0]
    assert item["path"] == str(mixed_folder / "rgb.png")
    assert list(dataset.bad_files) == [str(mixed_folder / "truncated.png")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the known bad file is skipped silently now
        assert dataset[0]["path"] == str(mixed_folder / "rgb.png")


def test_error_mode_names_the_file(mixed_folder: Path) -> None:
    dataset = ImageFolderDataset([mixed_folder / "truncated.png"], image_size=16, on_bad_file="error")
    with pytest.raises(ValueError, match="truncated.png"):
        dataset[0]


def test_invalid_policies_are_rejected(mixed_folder: Path) -> None:
    with pytest.raises(ValueError, match="resize must be one of"):
        ImageFolderDataset([mixed_folder / "rgb.png"], image_size=16, resize="stretch")
    with pytest.raises(ValueError, match="on_bad_file"):
        ImageFolderDataset([mixed_folder / "rgb.png"], image_size=16, on_bad_file="ignore")
