"""ImageQualityMetrics: known values of PSNR, SSIM, LPIPS and their luma variants; quantize_like_png."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from grain_pl.io.images import to_uint8
from grain_pl.metrics.image_quality import ImageQualityMetrics, luma, quantize_like_png, to_unit_range
from grain_pl.weights.lpips_alexnet import find_alexnet_weights

SIZE = 64  # big enough for SSIM's 11x11 window and AlexNet's strides, small enough to be fast


@pytest.fixture(scope="module")
def alexnet_weights() -> Path:
    path = find_alexnet_weights()
    if path is None:
        pytest.skip("LPIPS AlexNet weights are not prepared (make install prepares them)")
    return path


@pytest.fixture(scope="module")
def all_metrics_once(alexnet_weights: Path) -> ImageQualityMetrics:
    # Built once per module: LPIPS construction is the slow part.
    return ImageQualityMetrics(lpips=True, y_channel=True, lpips_weights_path=alexnet_weights)


@pytest.fixture
def all_metrics(all_metrics_once: ImageQualityMetrics) -> ImageQualityMetrics:
    all_metrics_once.reset()
    return all_metrics_once


def random_image(batch: int = 2, low: float = -1.0, high: float = 1.0) -> torch.Tensor:
    return torch.rand(batch, 3, SIZE, SIZE) * (high - low) + low


def test_names_follow_the_options() -> None:
    assert set(ImageQualityMetrics(lpips=False).keys()) == {"psnr", "ssim"}
    assert set(ImageQualityMetrics(lpips=False, y_channel=True, prefix="val/").keys()) == {
        "val/psnr", "val/ssim", "val/psnr_y", "val/ssim_y"}


def test_all_names_and_identical_images(all_metrics: ImageQualityMetrics) -> None:
    target = random_image()
    all_metrics.update(target.clone(), target)
    values = all_metrics.compute()
    assert set(values) == {"psnr", "ssim", "lpips", "psnr_y", "ssim_y"}
    assert values["ssim"].item() == pytest.approx(1.0, abs=1e-5)
    assert values["ssim_y"].item() == pytest.approx(1.0, abs=1e-5)
    assert values["lpips"].item() == pytest.approx(0.0, abs=1e-6)
    assert math.isinf(values["psnr"].item()) and math.isinf(values["psnr_y"].item())


def test_constant_offset_gives_known_psnr(all_metrics: ImageQualityMetrics) -> None:
    # An offset of 0.2 in [-1, 1] is 0.1 in [0, 1]: MSE 0.01 -> PSNR 10 log10(1 / 0.01) = 20 dB.
    # Luma weights sum to 1, so Y is offset by the same 0.1. The target stays below 0.6: nothing is clamped.
    target = random_image(low=-1.0, high=0.6)
    all_metrics.update(target + 0.2, target)
    values = all_metrics.compute()
    assert values["psnr"].item() == pytest.approx(20.0, abs=1e-3)
    assert values["psnr_y"].item() == pytest.approx(20.0, abs=1e-3)
    assert values["ssim"].item() < 1.0
    assert values["lpips"].item() > 0.0


def test_psnr_is_the_mean_over_images_across_batches(all_metrics: ImageQualityMetrics) -> None:
    # 0.1 and 0.01 offsets in [0, 1]: 20 dB and 40 dB, mean 30 dB (the dataset-wide MSE would give 22.97 dB).
    target = random_image(batch=1, low=-0.9, high=0.5)
    all_metrics.update(target + 0.2, target)
    all_metrics.update(target + 0.02, target)
    assert all_metrics.compute()["psnr"].item() == pytest.approx(30.0, abs=1e-2)


def test_lpips_is_positive_for_different_images_and_averages_per_sample(all_metrics: ImageQualityMetrics) -> None:
    target, other = random_image(batch=3), random_image(batch=3)
    batch_values = all_metrics(other, target)  # forward: this batch's values, and accumulated
    per_sample = all_metrics.perceptual(other, target)
    assert per_sample.shape == (3,) and bool((per_sample > 0).all())
    assert batch_values["lpips"].item() == pytest.approx(per_sample.mean().item(), rel=1e-5)
    assert all_metrics.compute()["lpips"].item() == pytest.approx(per_sample.mean().item(), rel=1e-5)


def test_inputs_are_clamped_to_what_an_image_can_hold(all_metrics: ImageQualityMetrics) -> None:
    target = random_image()
    target[:, :, :8] = 1.0
    output = target.clone()
    output[:, :, :8] = 1.7  # out of range: clamps back to 1.0
    all_metrics.update(output, target)
    values = all_metrics.compute()
    assert math.isinf(values["psnr"].item())
    assert values["lpips"].item() == pytest.approx(0.0, abs=1e-6)


def test_y_variants_ignore_a_chroma_only_change() -> None:
    metrics = ImageQualityMetrics(lpips=False, y_channel=True)
    target = random_image(low=-0.5, high=0.5)
    # A colour shift with zero BT.601 luma: 0.299 * 0.114 + 0.587 * 0 + 0.114 * (-0.299) = 0.
    chroma_shift = torch.tensor([0.114, 0.0, -0.299]).view(1, 3, 1, 1)
    metrics.update(target + chroma_shift, target)
    values = metrics.compute()
    assert values["psnr"].item() < 40
    assert values["psnr_y"].item() > 100
    assert values["ssim_y"].item() == pytest.approx(1.0, abs=1e-5)


def test_luma_is_bt601() -> None:
    rgb = torch.tensor([0.2, 0.6, 1.0]).view(1, 3, 1, 1)
    assert luma(rgb).shape == (1, 1, 1, 1)
    assert luma(rgb).item() == pytest.approx(0.299 * 0.2 + 0.587 * 0.6 + 0.114 * 1.0, abs=1e-6)
    assert to_unit_range(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]


def test_lpips_net_is_not_part_of_the_state(all_metrics: ImageQualityMetrics) -> None:
    # Keeps the AlexNet out of checkpoints and out of the optimizer of a module that holds the metrics.
    assert list(all_metrics.parameters()) == []
    assert all_metrics.state_dict() == {}
    assert all_metrics.perceptual is not None and not all_metrics.perceptual.training


def test_missing_lpips_weights_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("grain_pl.losses.perceptual.find_alexnet_weights", lambda: None)
    with pytest.raises(RuntimeError, match="AlexNet"):
        ImageQualityMetrics(lpips=True)
    ImageQualityMetrics(lpips=False)  # without LPIPS nothing is needed


def test_quantize_like_png_rounds_to_8_bit_levels() -> None:
    image = random_image() * 1.2  # also out of range: clamped like the PNG writer
    quantized = quantize_like_png(image)
    assert quantized.dtype == torch.float32
    assert torch.equal(quantize_like_png(quantized), quantized)  # already on the grid
    assert torch.equal(to_uint8(quantized), to_uint8(image))
    inside = image.abs() <= 1
    assert (quantized - image)[inside].abs().max().item() <= 1 / 255 + 1e-6  # half a level, in [-1, 1] units
    assert quantized.min().item() >= -1 and quantized.max().item() <= 1


def test_lightning_logs_the_collection_per_epoch(tmp_path: Path) -> None:
    # The intended use: update in validation_step, `self.log_dict(metrics)`; Lightning computes and resets.
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    targets = random_image(batch=4, low=-1.0, high=0.6)

    class Evaluated(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.val_metrics = ImageQualityMetrics(lpips=False, y_channel=True, prefix="val/")

        def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
            self.val_metrics.update(batch + 0.2, batch)
            self.log_dict(self.val_metrics, batch_size=len(batch))

    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    (results,) = trainer.validate(Evaluated(), DataLoader(targets, batch_size=2))
    assert set(results) == {"val/psnr", "val/ssim", "val/psnr_y", "val/ssim_y"}
    assert results["val/psnr"] == pytest.approx(20.0, abs=1e-3)
