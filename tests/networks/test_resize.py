"""The antialiased bicubic resize as matrix products (the form ONNX export traces) equals torch's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grain_pl.networks.resize import antialiased_bicubic, bicubic_resize_matrix, prepare_resize_matrices


@pytest.mark.parametrize(("in_size", "out_size"), [(64, 8), (8, 64), (32, 8), (1024, 16), (16, 1024), (24, 24)])
def test_the_matrices_resize_as_torch_does(in_size, out_size):
    image = torch.rand(2, 3, in_size, in_size) * 2 - 1
    rows = bicubic_resize_matrix(in_size, out_size)
    assert rows.shape == (out_size, in_size) and rows.dtype == torch.float32
    expected = F.interpolate(image, size=(out_size, out_size), mode="bicubic", align_corners=False, antialias=True)
    torch.testing.assert_close(rows @ image @ rows.t(), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(antialiased_bicubic(image, out_size), expected, rtol=0, atol=0)
    torch.testing.assert_close(rows.sum(dim=1), torch.ones(out_size), rtol=0, atol=1e-6)  # weights sum to 1


@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated:FutureWarning")
def test_a_matrix_is_never_built_inside_a_trace():
    """Built while tracing, the matrix would be traced as the resize ONNX cannot express: prepared beforehand, it is
    a constant of the graph."""

    def traced_resize(image):
        return image @ bicubic_resize_matrix(40, 5).t()

    with pytest.raises(RuntimeError, match="must be built before tracing"):
        torch.jit.trace(traced_resize, torch.rand(5, 40))
    prepare_resize_matrices((40, 5))
    traced = torch.jit.trace(traced_resize, torch.rand(5, 40))
    image = torch.rand(5, 40)
    torch.testing.assert_close(traced(image), traced_resize(image))
