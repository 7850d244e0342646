"""LR fidelity: the reference thumbnail is an antialiased bicubic downscale, and lr_psnr / lr_ssim score a stored LR
against it (the cap for an identical LR, less for a shifted one)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.data import astronaut

from grain_pl.io.images import from_uint8
from grain_pl.metrics.image_quality import PSNR_CAP_DB, ImageQualityMetrics
from grain_pl.metrics.lr_fidelity import SSIM_MIN_SIZE, lr_fidelity, reference_thumbnail


def astronaut_crops(size: int = 64) -> torch.Tensor:
    """Two detailed crops of skimage's astronaut as uint8 (2, 3, size, size)."""
    image = astronaut()
    crops = [image[60:60 + size, 180:180 + size], image[200:200 + size, 100:100 + size]]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()


def test_reference_thumbnail_is_an_antialiased_bicubic_downscale() -> None:
    hr = astronaut_crops()
    thumbnail = reference_thumbnail(hr, 16)
    assert thumbnail.dtype == torch.uint8 and thumbnail.shape == (2, 3, 16, 16)
    assert torch.equal(reference_thumbnail(hr[0], 16), thumbnail[0])  # one image or a batch
    # Pillow's own bicubic resize (8-bit between its passes) agrees within a few levels ...
    pillow = np.stack([np.array(Image.fromarray(image.permute(1, 2, 0).numpy()).resize((16, 16), Image.BICUBIC))
                       for image in hr])
    assert np.abs(thumbnail.permute(0, 2, 3, 1).numpy().astype(int) - pillow.astype(int)).max() <= 3
    # ... while a resize without the low-pass filter (the official LR loss' target) is far from it.
    aliased = F.interpolate(hr.float(), size=(16, 16), mode="bicubic", align_corners=False, antialias=False)
    assert (aliased.round().clamp(0, 255) - thumbnail.float()).abs().max() > 20


def test_an_lr_equal_to_the_thumbnail_scores_the_cap() -> None:
    hr = astronaut_crops()
    values = lr_fidelity(reference_thumbnail(hr, 16), hr)
    assert values["lr_psnr"].tolist() == [PSNR_CAP_DB, PSNR_CAP_DB]
    assert values["lr_ssim"] == pytest.approx(torch.ones(2), abs=1e-5)


def test_a_shifted_lr_scores_lower() -> None:
    hr = astronaut_crops()
    thumbnail = reference_thumbnail(hr, 16)
    shifted = torch.roll(thumbnail, shifts=1, dims=-1)
    values = lr_fidelity(shifted, hr)
    assert (values["lr_psnr"] < 40).all() and (values["lr_ssim"] < 0.95).all()
    # The same numbers as the HR metrics' definitions (torchmetrics through ImageQualityMetrics).
    for index in range(2):
        expected = ImageQualityMetrics(lpips=False)(from_uint8(shifted[index:index + 1]),
                                                    from_uint8(thumbnail[index:index + 1]))
        assert float(values["lr_psnr"][index]) == pytest.approx(float(expected["psnr"]), rel=1e-5)
        assert float(values["lr_ssim"][index]) == pytest.approx(float(expected["ssim"]), rel=1e-5, abs=1e-6)


def test_one_level_off_in_one_sample() -> None:
    hr = astronaut_crops()[:1]
    lr = reference_thumbnail(hr, 16).clone()
    lr[0, 1, 5, 7] += 1 if lr[0, 1, 5, 7] < 255 else -1
    samples = 3 * 16 * 16
    expected = 10 * math.log10(samples * 255**2)  # MSE = (1/255)^2 / samples
    assert float(lr_fidelity(lr, hr)["lr_psnr"][0]) == pytest.approx(expected, rel=1e-5)


def test_an_lr_too_small_for_the_ssim_window_has_no_lr_ssim() -> None:
    hr = astronaut_crops()
    small = SSIM_MIN_SIZE - 2
    values = lr_fidelity(reference_thumbnail(hr, small), hr)
    assert values["lr_ssim"] is None and values["lr_psnr"].tolist() == [PSNR_CAP_DB, PSNR_CAP_DB]


def test_autocast_does_not_change_the_numbers() -> None:
    hr = astronaut_crops()
    lr = torch.roll(reference_thumbnail(hr, 16), shifts=1, dims=-2)
    plain = lr_fidelity(lr, hr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = lr_fidelity(lr, hr)
        thumbnail = reference_thumbnail(hr, 16)
    assert torch.equal(thumbnail, reference_thumbnail(hr, 16))
    assert torch.equal(mixed["lr_psnr"], plain["lr_psnr"]) and torch.equal(mixed["lr_ssim"], plain["lr_ssim"])


def test_bad_inputs_are_refused() -> None:
    hr = astronaut_crops()
    with pytest.raises(ValueError, match="uint8"):
        lr_fidelity(from_uint8(reference_thumbnail(hr, 16)), hr)
    with pytest.raises(ValueError, match="2 HR images"):
        lr_fidelity(reference_thumbnail(hr, 16)[:1], hr)
