"""torch's antialiased bicubic resize, the one the bicubic parameterisations and the bicubic baseline use, and the
same resize as two matrix products for ONNX export.

ONNX has no resize equal to torch's antialiased bicubic (Pillow's Keys cubic, a = -0.5, stretched by the scale
factor when shrinking), and the TorchScript exporter cannot convert it. The resize is linear and separable, so along
each axis it is a fixed matrix: `resize(image) = rows @ image @ columns.T`. The matrices are torch's own weights
(the resize of the identity), built before tracing (`prepare_resize_matrices`) so that the traced graph holds them as
constants; the result equals torch's up to float summation order.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["antialiased_bicubic", "bicubic_resize_matrix", "prepare_resize_matrices"]

_MATRICES: dict[tuple[int, int], torch.Tensor] = {}


def antialiased_bicubic(image: torch.Tensor, size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, size, size) by torch's antialiased bicubic resize (align_corners=False); while
    `torch.onnx.export` traces it, as matrix products with the same weights."""
    if torch.onnx.is_in_onnx_export():
        # sizes are traced as tensors: the matrices are looked up by their values (the graph's sizes are fixed)
        rows = bicubic_resize_matrix(int(image.shape[-2]), int(size)).to(image.device, image.dtype)
        columns = bicubic_resize_matrix(int(image.shape[-1]), int(size)).to(image.device, image.dtype)
        return rows @ image @ columns.t()
    return F.interpolate(image, size=(size, size), mode="bicubic", align_corners=False, antialias=True)


def bicubic_resize_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """The (out_size, in_size) float32 CPU matrix of torch's antialiased bicubic resize along one axis: row i holds
    the weights of output pixel i. Built once per pair of sizes (by resizing the identity) and kept."""
    key = (in_size, out_size)
    if key not in _MATRICES:
        if torch.jit.is_tracing():  # it would be traced as the resize ONNX cannot express
            raise RuntimeError(f"the {in_size} -> {out_size} resize matrix must be built before tracing: call "
                               "grain_pl.networks.resize.prepare_resize_matrices first")
        # one image per input pixel, along the width (torch 2.14.1 antialiased, to a width of 1, repeats one row)
        identity = torch.eye(in_size, dtype=torch.float32).reshape(in_size, 1, 1, in_size)
        resized = F.interpolate(identity, size=(1, out_size), mode="bicubic", align_corners=False, antialias=True)
        _MATRICES[key] = resized[:, 0, 0, :].t().contiguous()
    return _MATRICES[key]


def prepare_resize_matrices(*size_pairs: tuple[int, int]) -> None:
    """Build the matrices of these (in_size, out_size) resizes now, outside any trace."""
    for in_size, out_size in size_pairs:
        bicubic_resize_matrix(in_size, out_size)
