"""The evaluation's baselines as pure functions: resize through an 8-bit PNG, JPEG/WebP at fixed and matched sizes."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.data import astronaut

from grain_pl.codec import lr_png_bytes
from grain_pl.evaluation import (
    DEFAULT_METHODS,
    avif_available,
    baseline_reconstructions,
    codec_baseline,
    decode_image_bytes,
    encode_with_pillow,
    largest_quality_within,
    matched_codec_baseline,
    parse_method,
    resize_baseline,
)
from grain_pl.metrics.lr_fidelity import reference_thumbnail

AVIF = pytest.param("avif", marks=pytest.mark.skipif(not avif_available(), reason="this Pillow cannot write AVIF"))


def astronaut_crop(size: int = 48, top: int = 60, left: int = 180) -> torch.Tensor:
    """A face-and-detail crop of skimage's astronaut as uint8 (3, size, size)."""
    return torch.from_numpy(np.ascontiguousarray(astronaut()[top:top + size, left:left + size])).permute(2, 0, 1)


def brute_force_largest(sizes: dict[int, int], target: int) -> int | None:
    fitting = [quality for quality, size in sizes.items() if size <= target]
    return max(fitting) if fitting else None


# ----- the search -----


def test_search_equals_a_full_scan_on_size_tables() -> None:
    monotone = {quality: 200 + 3 * quality + (quality // 10) ** 2 for quality in range(1, 101)}
    # Real encoders dip by a few bytes now and then, also right after quality 1; the final scan absorbs that.
    dipping = {quality: size - (5 if quality % 7 == 0 else 0) for quality, size in monotone.items()}
    dipping[2] = dipping[1] - 2
    for sizes in (monotone, dipping):
        calls: list[int] = []

        def size_of(quality: int, sizes: dict[int, int] = sizes, calls: list[int] = calls) -> int:
            calls.append(quality)
            return sizes[quality]

        for target in range(150, 600):
            calls.clear()
            assert largest_quality_within(size_of, target, slack=8) == brute_force_largest(sizes, target), target
            assert len(set(calls)) <= 14  # a binary search (8 calls) and a handful around the target


@pytest.mark.parametrize("codec", ["jpeg", "webp", AVIF])
def test_matched_search_finds_the_largest_quality_under_the_target(codec: str) -> None:
    image = astronaut_crop()  # on this crop every encoder's sizes dip somewhere (JPEG at 33, AVIF by 13 B at 8)
    sizes = {quality: len(encode_with_pillow(image, codec, quality)) for quality in range(1, 101)}
    dips = [quality for quality in range(1, 100) if sizes[quality + 1] < sizes[quality]]
    targets = {sizes[quality] + offset for quality in (1, 2, 7, 33, 80, 99, 100, *dips) for offset in (-1, 0, 1)}
    targets |= {(sizes[q] + sizes[q + 1]) // 2 for q in (10, 50, 90)}
    for target in sorted(targets):
        expected = brute_force_largest(sizes, target)
        result = matched_codec_baseline(image, codec, target)
        if expected is None:  # even quality 1 is too big: quality 1, flagged
            assert result.quality == 1 and result.over_target and result.num_bytes == sizes[1]
        else:
            assert result.quality == expected, target
            assert result.num_bytes == sizes[expected] <= target
            assert not result.over_target
        assert result.target_bytes == target
        assert result.payload == encode_with_pillow(image, codec, result.quality)


def test_matched_search_falls_back_to_quality_one_when_nothing_fits() -> None:
    image = astronaut_crop()
    for codec in ("jpeg", "webp", *(["avif"] if avif_available() else [])):
        result = matched_codec_baseline(image, codec, target_bytes=10)
        assert result.quality == 1 and result.over_target
        assert result.num_bytes == len(encode_with_pillow(image, codec, 1)) > 10


# ----- fixed-quality codecs -----


def test_codec_baseline_decodes_its_own_bytes() -> None:
    image = astronaut_crop()
    for codec, magic in (("jpeg", b"\xff\xd8"), ("webp", b"RIFF"), *([("avif", b"ftypavif")] if avif_available()
                                                                    else [])):
        result = codec_baseline(image, codec, 40)
        assert magic in result.payload[:12] and result.quality == 40 and result.method == f"{codec}_q40"
        assert result.output.dtype == torch.uint8 and result.output.shape == image.shape
        assert torch.equal(result.output, decode_image_bytes(result.payload))
        assert (result.output.float() - image.float()).abs().mean() < 12  # a real, lossy copy of the image
    assert len(encode_with_pillow(image, "jpeg", 10)) < len(encode_with_pillow(image, "jpeg", 90))


# ----- resize baselines -----


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_resize_baseline_of_a_constant_image_is_exact(mode: str) -> None:
    image = torch.empty(3, 32, 32, dtype=torch.uint8)
    image[0], image[1], image[2] = 17, 128, 250
    result = resize_baseline(image, 8, mode, png_encoder=lr_png_bytes)
    assert torch.equal(result.output, image)
    lr = decode_image_bytes(result.payload)
    assert lr.shape == (3, 8, 8) and torch.equal(lr, image[:, :8, :8])


def test_resize_baseline_stores_its_lr_as_the_smallest_png() -> None:
    image = astronaut_crop(64)
    result = resize_baseline(image, 8, "bicubic", png_encoder=lr_png_bytes)
    lr = decode_image_bytes(result.payload)
    assert result.payload.startswith(b"\x89PNG") and lr.shape == (3, 8, 8)
    assert result.payload == lr_png_bytes(lr) and result.num_bytes == len(result.payload)
    assert result.output.shape == image.shape and result.quality is None and result.target_bytes is None


def test_resize_baselines_carry_their_stored_lr_and_bicubic_is_the_reference_thumbnail() -> None:
    image = astronaut_crop(64)
    results = baseline_reconstructions(image, 8, ["bilinear", "bicubic", "jpeg_q40"], png_encoder=lr_png_bytes)
    for name in ("bilinear", "bicubic"):
        assert torch.equal(results[name].lr, decode_image_bytes(results[name].payload))  # what the file holds
    assert torch.equal(results["bicubic"].lr, reference_thumbnail(image, 8))  # lr_psnr's reference: the same call
    assert not torch.equal(results["bilinear"].lr, results["bicubic"].lr)
    assert results["jpeg_q40"].lr is None  # a codec stores no LR


@pytest.mark.parametrize(("mode", "pillow_filter"), [("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)])
def test_antialiased_downscale_follows_pillow(mode: str, pillow_filter: int) -> None:
    # The documented claim: torch's antialiased resize is Pillow's filter, up to Pillow's 8-bit fixed point.
    image = astronaut_crop(128)
    ours = resize_baseline(image, 16, mode, png_encoder=lr_png_bytes)
    pillow = Image.fromarray(image.permute(1, 2, 0).numpy()).resize((16, 16), pillow_filter)
    difference = (decode_image_bytes(ours.payload).float()
                  - torch.from_numpy(np.array(pillow)).permute(2, 0, 1).float()).abs()
    assert difference.max() <= 4 and difference.mean() < 0.5


# ----- the dispatcher -----


def test_baseline_reconstructions_runs_every_default_baseline_in_order() -> None:
    image = astronaut_crop(32)
    names = [name for name in DEFAULT_METHODS if name != "grain" and (avif_available() or "avif" not in name)]
    results = baseline_reconstructions(image, 8, names, target_bytes=400, png_encoder=lr_png_bytes)
    assert list(results) == names
    for name, result in results.items():
        assert result.method == name and result.output.shape == image.shape and result.output.dtype == torch.uint8
        assert result.num_bytes == len(result.payload) > 0
        if name.endswith("_matched"):
            assert result.target_bytes == 400
        if "_q" in name:
            assert result.quality == int(name.split("_q")[1])
    for name in ("jpeg_q1", "webp_q70", *(["avif_q40"] if avif_available() else [])):
        assert results[name].payload == encode_with_pillow(image, name[:4], results[name].quality)
        with Image.open(io.BytesIO(results[name].payload)) as opened:
            assert opened.format == name[:4].upper()


def test_baseline_reconstructions_refuses_what_it_cannot_do() -> None:
    image = astronaut_crop(32)
    with pytest.raises(ValueError, match="target_bytes"):
        baseline_reconstructions(image, 8, ["jpeg_matched"])
    with pytest.raises(ValueError, match="not a baseline"):
        baseline_reconstructions(image, 8, ["grain"])
    with pytest.raises(ValueError, match="uint8"):
        baseline_reconstructions(image.float(), 8, ["jpeg_q1"])


def test_parse_method_names() -> None:
    assert parse_method("jpeg_q37").quality == 37 and parse_method("webp_matched").quality is None
    assert parse_method("avif_q5").variant == "avif" and parse_method("avif_matched").kind == "codec"
    assert parse_method("bicubic").kind == "resize" and parse_method("grain").kind == "grain"
    for bad in ("jpeg_q0", "jpeg_q101", "avif_q0", "png_q5", "lanczos", "jpeg", "avif"):
        with pytest.raises(ValueError):
            parse_method(bad)
