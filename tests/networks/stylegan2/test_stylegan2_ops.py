"""upfirdn2d and fused leaky ReLU against direct, loop-level definitions."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from grain_pl.networks.stylegan2 import FusedLeakyReLU, fused_leaky_relu, make_kernel, upfirdn2d


def reference_upfirdn2d(x, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
    """Each step written out literally (slow, obviously correct)."""
    batch, channels, height, width = x.shape
    # zero insertion: the input pixel lands on the first position of each up_y x up_x cell.
    upsampled = x.new_zeros(batch, channels, height * up_y, width * up_x)
    upsampled[:, :, ::up_y, ::up_x] = x
    # pad with zeros, then crop where a pad is negative.
    padded = F.pad(upsampled, [max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
    padded = padded[:, :, max(-pad_y0, 0): padded.shape[2] - max(-pad_y1, 0),
                    max(-pad_x0, 0): padded.shape[3] - max(-pad_x1, 0)]
    # true convolution, no padding: out[y, x] = sum_ij k[i, j] * p[y + kh - 1 - i, x + kw - 1 - j]
    kernel_h, kernel_w = kernel.shape
    out_h, out_w = padded.shape[2] - kernel_h + 1, padded.shape[3] - kernel_w + 1
    out = x.new_zeros(batch, channels, out_h, out_w)
    for i in range(kernel_h):
        for j in range(kernel_w):
            rows = slice(kernel_h - 1 - i, kernel_h - 1 - i + out_h)
            cols = slice(kernel_w - 1 - j, kernel_w - 1 - j + out_w)
            out += kernel[i, j] * padded[:, :, rows, cols]
    # keep every down-th pixel.
    return out[:, :, ::down_y, ::down_x]


CASES = [
    # up, down, pad
    (1, 1, (0, 0)),
    (2, 1, (2, 1)),  # rosinality's Upsample
    (1, 1, (1, 1)),  # Blur after a transposed conv
    (1, 2, (2, 2)),  # D's downsampling blur before a stride-2 3x3 conv
    (2, 2, (1, 2, 0, 3)),
    (1, 1, (-1, 2, 1, -2)),  # negative pads crop
    (3, 1, (1, 1)),
    ((2, 1), (1, 3), (0, 1, 2, 0)),  # different factors per axis
    (2, 1, (-2, -1, 3, -1)),
]


@pytest.mark.parametrize(("up", "down", "pad"), CASES)
def test_upfirdn2d_matches_direct_definition(up, down, pad):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)  # non-square input
    kernel = torch.randn(3, 4, dtype=torch.float64)  # non-square, asymmetric kernel: catches a missing flip
    up_x, up_y = (up, up) if isinstance(up, int) else up
    down_x, down_y = (down, down) if isinstance(down, int) else down
    pads = (pad[0], pad[1], pad[0], pad[1]) if len(pad) == 2 else pad
    expected = reference_upfirdn2d(x, kernel, up_x, up_y, down_x, down_y, *pads)
    got = upfirdn2d(x, kernel, up=up, down=down, pad=pad)
    assert got.shape == expected.shape
    # Output size per axis: (in * up + pad0 + pad1 - k) // down + 1.
    assert got.shape[3] == (7 * up_x + pads[0] + pads[1] - 4) // down_x + 1
    assert got.shape[2] == (5 * up_y + pads[2] + pads[3] - 3) // down_y + 1
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)


def test_upfirdn2d_convolves_with_the_flipped_kernel():
    # A unit impulse with full padding reproduces the kernel itself (not its mirror image).
    kernel = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    impulse = torch.ones(1, 1, 1, 1)
    out = upfirdn2d(impulse, kernel, pad=(3, 3, 2, 2))
    assert torch.equal(out[0, 0], kernel)


def test_upsample_by_two_keeps_a_constant_image_constant():
    # make_kernel sums to 1; times up**2 compensates for the inserted zeros.
    kernel = make_kernel([1, 3, 3, 1]) * 4
    out = upfirdn2d(torch.ones(1, 2, 6, 6), kernel, up=2, pad=(2, 1))
    assert out.shape == (1, 2, 12, 12)
    torch.testing.assert_close(out[:, :, 2:-2, 2:-2], torch.ones(1, 2, 8, 8))


def test_make_kernel():
    kernel = make_kernel([1, 3, 3, 1])
    expected = torch.tensor([1.0, 3, 3, 1])[:, None] * torch.tensor([1.0, 3, 3, 1])[None, :] / 64
    assert torch.equal(kernel, expected)
    assert make_kernel(torch.ones(2, 3)).sum().item() == pytest.approx(1.0)


def test_upfirdn2d_gradient():
    x = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    kernel = make_kernel([1, 3, 3, 1]).double()
    assert torch.autograd.gradcheck(lambda t: upfirdn2d(t, kernel, up=2, down=1, pad=(2, 1)), (x,))


def test_fused_leaky_relu_definition():
    x = torch.randn(2, 5, 3, 3)
    bias = torch.randn(5)
    shifted = x + bias[None, :, None, None]
    expected = torch.where(shifted >= 0, shifted, 0.2 * shifted) * math.sqrt(2)
    torch.testing.assert_close(fused_leaky_relu(x, bias), expected)
    # 2-D input (EqualLinear) and no bias.
    flat = torch.randn(4, 5)
    torch.testing.assert_close(fused_leaky_relu(flat, bias), F.leaky_relu(flat + bias, 0.2) * math.sqrt(2))
    torch.testing.assert_close(fused_leaky_relu(flat), F.leaky_relu(flat, 0.2) * math.sqrt(2))


def test_fused_leaky_relu_module():
    module = FusedLeakyReLU(5)
    assert [name for name, _ in module.named_parameters()] == ["bias"]
    with torch.no_grad():
        module.bias.normal_()
    x = torch.randn(2, 5, 3, 3)
    torch.testing.assert_close(module(x), fused_leaky_relu(x, module.bias))
    assert list(FusedLeakyReLU(5, bias=False).parameters()) == []
