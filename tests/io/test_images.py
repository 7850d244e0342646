"""Images <-> tensors (grain_pl.io.images): PIL conversions, encoded bytes and the size policies."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from grain_pl.io.images import (
    DETERMINISTIC_RESIZE_POLICIES,
    RESIZE_POLICIES,
    ImageSizeError,
    check_resize_policy,
    decode_image_bytes,
    fit_image,
    pil_to_signed,
    pil_to_uint8,
    signed_to_pil,
    uint8_to_pil,
)


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_uint8_tensors_and_pil_images_map_pixel_for_pixel():
    image = random_image(7, 5)
    pixels = pil_to_uint8(image)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 5, 7) and pixels.is_contiguous()
    assert torch.equal(pixels, torch.from_numpy(np.array(image)).permute(2, 0, 1))
    back = uint8_to_pil(pixels)
    assert back.mode == "RGB" and np.array_equal(np.asarray(back), np.asarray(image))


def test_signed_tensors_use_the_one_level_mapping():
    image = random_image(16, 16)
    signed = pil_to_signed(image)
    assert signed.dtype == torch.float32
    assert torch.equal(signed, torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 127.5 - 1)
    nudged = signed + 0.4 / 127.5  # less than half a level off: rounds back
    assert np.array_equal(np.asarray(signed_to_pil(nudged)), np.asarray(image))


def test_wrong_inputs_are_named():
    with pytest.raises(ValueError, match=r"pixels must be a uint8 \(3, H, W\) tensor, got torch.float32"):
        uint8_to_pil(torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match=r"uint8 \(3, H, W\) tensor, got torch.uint8 \(4, 4\)"):
        uint8_to_pil(torch.zeros(4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="8-bit RGB image, got mode L"):
        pil_to_uint8(Image.new("L", (4, 4)))


def test_encoded_bytes_decode_to_rgb_levels():
    levels = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="PNG")  # a grey PNG expands to three equal channels
    decoded = decode_image_bytes(buffer.getvalue())
    assert decoded.shape == (3, 4, 4) and all(torch.equal(channel, torch.from_numpy(levels)) for channel in decoded)


# ----- size policies -----

def test_the_policy_names():
    assert RESIZE_POLICIES == ("error", "resize", "center_crop", "random_crop")
    assert DETERMINISTIC_RESIZE_POLICIES == ("error", "resize", "center_crop")
    check_resize_policy("random_crop")
    with pytest.raises(ValueError, match=r"resize must be one of \('error', 'resize', 'center_crop'\), got 'ra"):
        check_resize_policy("random_crop", DETERMINISTIC_RESIZE_POLICIES)
    with pytest.raises(ValueError, match="resize must be one of"):
        fit_image(random_image(8, 8), 8, "stretch")


@pytest.mark.parametrize("policy", RESIZE_POLICIES)
def test_an_image_of_the_target_size_is_returned_untouched(policy):
    image = random_image(8, 8)
    assert fit_image(image, 8, policy) is image


def test_error_names_the_image_and_both_sizes():
    message = r"image photo\.png has size 12x8 \(width x height\), expected 8x8"
    with pytest.raises(ImageSizeError, match=message) as error:
        fit_image(random_image(12, 8), 8, "error", "photo.png")
    assert (error.value.width, error.value.height, error.value.size) == (12, 8, 8)


def test_resize_is_pillows_antialiased_bilinear():
    image = random_image(40, 24)
    assert np.array_equal(np.asarray(fit_image(image, 16, "resize")),
                          np.asarray(image.resize((16, 16), Image.Resampling.BILINEAR)))


def test_crops_keep_the_aspect_ratio_and_cut_a_square():
    wide = np.zeros((16, 48, 3), dtype=np.uint8)
    wide[:, 16:32] = 255  # white centre square, black sides
    image = Image.fromarray(wide)
    assert np.array_equal(np.asarray(fit_image(image, 16, "center_crop")), wide[:, 16:32])
    torch.manual_seed(0)
    crops = {np.asarray(fit_image(image, 16, "random_crop")).tobytes() for _ in range(12)}
    assert len(crops) > 1
    assert crops <= {wide[:, left:left + 16].tobytes() for left in range(33)}


# ----- memory bounds (issue 10, item 1) -----

@pytest.fixture
def resize_spy(monkeypatch):
    """Fails a test as soon as Pillow is asked for a resize whose output would be big (before it allocates)."""
    requested = []
    original = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        requested.append(tuple(size))
        assert size[0] * size[1] <= 1 << 22, f"asked Pillow for a {size[0]}x{size[1]} image"
        return original(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    return requested


def write_one_by_a_million_png(path):
    Image.new("RGB", (1, 1_000_000), (200, 30, 40)).save(path)  # a 2 KB file of a million pixels
    assert path.stat().st_size < 8000
    return path


def test_a_crop_of_an_extreme_aspect_image_resamples_only_the_square(tmp_path, resize_spy):
    with Image.open(write_one_by_a_million_png(tmp_path / "thin.png")) as image:
        thin = image.convert("RGB")
    for policy in ("center_crop", "random_crop", "resize"):
        out = fit_image(thin, 1024, policy)  # scaling first would ask for 1024 x 1,024,000,000 pixels
        assert out.size == (1024, 1024) and out.getextrema() == ((200, 200), (30, 30), (40, 40))
    wide = thin.transpose(Image.Transpose.TRANSPOSE)
    assert fit_image(wide, 1024, "center_crop").getextrema() == ((200, 200), (30, 30), (40, 40))
    assert all(width * height <= 1 << 22 for width, height in resize_spy)


def test_crops_that_fit_in_memory_are_exactly_scale_then_crop():
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    for width, height, size in ((40, 24, 16), (37, 100, 64), (1000, 17, 16), (129, 127, 100), (17, 9, 32)):
        image = random_image(width, height, seed=width)
        scaled = TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        assert np.array_equal(np.asarray(fit_image(image, size, "center_crop")),
                              np.asarray(TF.center_crop(scaled, [size, size])))


def test_a_resize_over_the_memory_limit_is_refused_before_it_allocates(monkeypatch, resize_spy):
    import grain_pl.io.images as images

    image = random_image(5, 3000)
    direct = np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR))
    resize_spy.clear()
    monkeypatch.setattr(images, "MAX_RESIZE_PIXELS", 5000)  # 32 x 3000 rows first would not fit: vertical first
    assert np.array_equal(np.asarray(fit_image(image, 32, "resize")), direct)
    monkeypatch.setattr(images, "MAX_RESIZE_PIXELS", 500)  # not even the output fits
    resize_spy.clear()
    with pytest.raises(images.ImageTooLargeError, match=r"image tall\.png \(5x3000\) is too extreme to bring to "
                                                        r"32x32 with 'resize'"):
        fit_image(image, 32, "resize", "tall.png")
    with pytest.raises(images.ImageTooLargeError, match="tall.png"):
        images.check_fit(5, 3000, 32, "center_crop", "tall.png")
    assert resize_spy == []
