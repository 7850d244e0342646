"""StyleGAN2Discriminator: rosinality's key layout at 1024 and the minibatch-stddev grouping."""

from __future__ import annotations

import pytest
import torch

from grain_pl.networks.stylegan2 import StyleGAN2Discriminator
from grain_pl.networks.stylegan2.discriminator import _stddev_group_size

TINY = dict(size=32, channel_max=16)


def rosinality_discriminator_layout() -> dict[str, tuple[int, ...]]:
    layout: dict[str, tuple[int, ...]] = {"convs.0.0.weight": (32, 3, 1, 1), "convs.0.1.bias": (32,)}
    pairs = [(32, 64), (64, 128), (128, 256), (256, 512)] + [(512, 512)] * 4
    for i, (cin, cout) in enumerate(pairs, start=1):
        layout[f"convs.{i}.conv1.0.weight"], layout[f"convs.{i}.conv1.1.bias"] = (cin, cin, 3, 3), (cin,)
        layout[f"convs.{i}.conv2.0.kernel"] = (4, 4)
        layout[f"convs.{i}.conv2.1.weight"], layout[f"convs.{i}.conv2.2.bias"] = (cout, cin, 3, 3), (cout,)
        layout[f"convs.{i}.skip.0.kernel"], layout[f"convs.{i}.skip.1.weight"] = (4, 4), (cout, cin, 1, 1)
    layout["final_conv.0.weight"], layout["final_conv.1.bias"] = (512, 513, 3, 3), (512,)
    layout["final_linear.0.weight"], layout["final_linear.0.bias"] = (512, 8192), (512,)
    layout["final_linear.1.weight"], layout["final_linear.1.bias"] = (1, 512), (1,)
    return layout


def test_state_dict_layout_and_params_at_1024():
    with torch.device("meta"):
        discriminator = StyleGAN2Discriminator(1024)
    state = discriminator.state_dict()
    assert len(state) == 64
    assert {key: tuple(value.shape) for key, value in state.items()} == rosinality_discriminator_layout()
    assert sum(p.numel() for p in discriminator.parameters()) == 29_012_513


@pytest.mark.parametrize("batch", [1, 2, 4, 6, 8])
def test_logits_shape_for_any_batch(batch):
    discriminator = StyleGAN2Discriminator(**TINY)
    assert discriminator(torch.randn(batch, 3, 32, 32)).shape == (batch, 1)


def test_group_size_fallback():
    # rosinality: min(batch, 4); batches it would crash on (6, 5, 10) use the largest divisor <= 4.
    assert [_stddev_group_size(batch, 4) for batch in (1, 2, 3, 4, 8, 12)] == [1, 2, 3, 4, 4, 4]
    assert [_stddev_group_size(batch, 4) for batch in (5, 6, 10)] == [1, 3, 2]


def test_minibatch_stddev_groups_like_rosinality():
    discriminator = StyleGAN2Discriminator(**TINY)
    x = torch.randn(8, 16, 4, 4)
    out = discriminator.minibatch_stddev(x)
    assert out.shape == (8, 17, 4, 4)
    assert torch.equal(out[:, :16], x)
    # Batch 8 with group 4: sample b is grouped with the samples of the same b % 2.
    for member in (0, 1):
        group = x[member::2]
        expected = torch.sqrt(group.var(0, unbiased=False) + 1e-8).mean()
        for b in range(member, 8, 2):
            torch.testing.assert_close(out[b, 16], expected.expand(4, 4))
    # A lone sample has zero variance: the channel is sqrt(1e-8).
    single = discriminator.minibatch_stddev(x[:1])
    torch.testing.assert_close(single[0, 16], torch.full((4, 4), 1e-4))


def test_gradient_reaches_the_image():
    discriminator = StyleGAN2Discriminator(**TINY)
    image = torch.randn(2, 3, 32, 32, requires_grad=True)
    discriminator(image).sum().backward()
    assert image.grad.abs().sum() > 0
