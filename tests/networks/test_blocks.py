from __future__ import annotations

import pytest
import torch
from torch import nn

from grain_pl.networks.blocks import RRDB, ResidualDenseBlock, SqueezeExcitation, conv_over_concat, light_rrdb


def test_conv_over_concat_equals_conv_of_the_concatenation():
    conv = nn.Conv2d(7, 5, 3, padding=1)
    parts = [torch.randn(2, 4, 9, 9), torch.randn(2, 2, 9, 9), torch.randn(2, 1, 9, 9)]
    assert torch.allclose(conv_over_concat(conv, parts), conv(torch.cat(parts, dim=1)), atol=1e-6)
    with pytest.raises(ValueError, match="parts have 6 channels in all, the conv expects 7"):
        conv_over_concat(conv, parts[:2])


def test_dense_block_is_esrgans():
    block = ResidualDenseBlock(8, 4, num_convs=5)
    x = torch.randn(1, 8, 6, 6)
    features = [x]
    for index in range(1, 5):
        conv = getattr(block, f"conv{index}")
        features.append(torch.nn.functional.leaky_relu(conv(torch.cat(features, 1)), 0.2))
    expected = block.conv5(torch.cat(features, 1)) * 0.2 + x
    assert torch.allclose(block(x), expected, atol=1e-6)
    assert [getattr(block, f"conv{i}").in_channels for i in range(1, 6)] == [8, 12, 16, 20, 24]


def test_rrdb_scales_its_residual():
    block = RRDB(8, 4)
    x = torch.randn(1, 8, 5, 5)
    chain = block.rdb3(block.rdb2(block.rdb1(x)))
    assert torch.allclose(block(x), chain * 0.2 + x, atol=1e-6)
    light = light_rrdb(8, 4)
    assert light.num_dense_blocks == 1 and light.rdb1.num_convs == 4
    assert torch.allclose(light(x), light.rdb1(x) * 0.2 + x, atol=1e-6)


def test_squeeze_excitation_gates_channels():
    se = SqueezeExcitation(32, reduction=16)
    assert se.fc1.weight.shape == (2, 32, 1, 1) and se.fc1.bias is None and se.fc2.bias is None
    x = torch.rand(2, 32, 4, 4)
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean((2, 3), keepdim=True)))))
    assert torch.allclose(se(x), x * gate)
