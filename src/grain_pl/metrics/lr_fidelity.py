"""LR fidelity: is the stored LR a thumbnail a person can look at?

The stored 8-bit LR is compared with the *reference thumbnail* of the HR image: the 8-bit HR downscaled to the LR
size by an antialiased bicubic resize (Pillow's filter, Keys a = -0.5), rounded to 8 bits. That is exactly the LR
the bicubic baseline of `grain evaluate` stores, so its own `lr_psnr` is the cap. `grain evaluate` reports it per
method (`lr_psnr`, `lr_ssim`) and every GRAIN stage logs it while it trains (`val/lr_psnr`, `val/lr_ssim`).

    lr_uint8 = to_uint8(out.lr)                        # the LR as its PNG holds it
    lr_fidelity(lr_uint8, to_uint8(hr))                # {"lr_psnr": (B,), "lr_ssim": (B,)}
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from grain_pl.io.images import from_uint8
from grain_pl.metrics.image_quality import capped_psnr, to_unit_range

REFERENCE_MODE = "bicubic"
# torchmetrics' SSIM reflect-pads by half its 11-px window, which needs an image of at least 6 px.
SSIM_MIN_SIZE = 6


def resize_levels(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """uint8 (3, h, w) or (B, 3, h, w) -> uint8 (..., *size): float resize with Pillow's filters, rounded and clamped.

    torch's antialiased interpolate implements Pillow's convolution resize (triangle filter; Keys cubic a = -0.5,
    stretched by the scale factor) in float; Pillow itself rounds to 8 bits between its two passes, so the two
    differ by a few levels.
    """
    batch = image if image.ndim == 4 else image[None]
    # In float32 even under a bf16/fp16 autocast: the result is rounded to levels.
    with torch.autocast(device_type=image.device.type, enabled=False):
        resized = F.interpolate(batch.float(), size=size, mode=mode, align_corners=False, antialias=True)
    resized = resized.round().clamp(0, 255).to(torch.uint8)
    return resized if image.ndim == 4 else resized[0]


def reference_thumbnail(hr_uint8: torch.Tensor, lr_size: int | tuple[int, int]) -> torch.Tensor:
    """The reference thumbnail of an 8-bit HR image (3, H, W) or (B, 3, H, W): antialiased bicubic, 8-bit."""
    size = (lr_size, lr_size) if isinstance(lr_size, int) else tuple(lr_size)
    return resize_levels(hr_uint8, size, REFERENCE_MODE)


@torch.no_grad()
def lr_fidelity(lr_uint8: torch.Tensor, hr_uint8: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Per-image "lr_psnr" and "lr_ssim" (B,) of 8-bit LRs (B, 3, h, w) against the reference thumbnails of their
    8-bit HRs (B, 3, H, W).

    The same definitions as the HR metrics: RGB mapped to [0, 1], data range 1, PSNR per image capped at
    PSNR_CAP_DB, SSIM with torchmetrics' 11x11 Gaussian window (sigma 1.5). "lr_ssim" is None for an LR under
    SSIM_MIN_SIZE pixels, where that window does not fit.
    """
    for name, image in (("lr_uint8", lr_uint8), ("hr_uint8", hr_uint8)):
        if image.dtype != torch.uint8 or image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"{name} must be a uint8 (B, 3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
    if lr_uint8.shape[0] != hr_uint8.shape[0]:
        raise ValueError(f"{lr_uint8.shape[0]} LR images for {hr_uint8.shape[0]} HR images")
    reference = reference_thumbnail(hr_uint8, tuple(lr_uint8.shape[-2:])).to(lr_uint8.device)
    # The mapping of the HR metrics (ImageQualityMetrics, grain evaluate), in float32 under any autocast.
    lr_unit, reference_unit = to_unit_range(from_uint8(lr_uint8)), to_unit_range(from_uint8(reference))
    with torch.autocast(device_type=lr_uint8.device.type, enabled=False):
        ssim = None
        if min(lr_uint8.shape[-2:]) >= SSIM_MIN_SIZE:
            ssim = structural_similarity_index_measure(lr_unit, reference_unit, data_range=1.0, reduction="none")
        return {"lr_psnr": capped_psnr(lr_unit, reference_unit), "lr_ssim": ssim}
