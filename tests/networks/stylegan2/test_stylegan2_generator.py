"""StyleGAN2Generator: rosinality's key layout at 1024, W+ consumption, features and noise modes."""

from __future__ import annotations

import pytest
import torch

from grain_pl.networks.stylegan2 import StyleGAN2Generator, SynthesisOutput
from grain_pl.networks.stylegan2.layers import NoiseInjection

TINY = dict(size=32, style_dim=32, n_mlp=2, channel_max=16)


def rosinality_generator_layout() -> dict[str, tuple[int, ...]]:
    """Key -> shape of rosinality's Generator(1024, 512, 8, channel_multiplier=2), from the layout table."""
    layout: dict[str, tuple[int, ...]] = {}
    for i in range(1, 9):
        layout[f"style.{i}.weight"], layout[f"style.{i}.bias"] = (512, 512), (512,)
    layout["input.input"] = (1, 512, 4, 4)

    def styled_conv(prefix, cin, cout, upsample):
        layout[f"{prefix}.conv.weight"] = (1, cout, cin, 3, 3)
        layout[f"{prefix}.conv.modulation.weight"], layout[f"{prefix}.conv.modulation.bias"] = (cin, 512), (cin,)
        layout[f"{prefix}.noise.weight"], layout[f"{prefix}.activate.bias"] = (1,), (cout,)
        if upsample:
            layout[f"{prefix}.conv.blur.kernel"] = (4, 4)

    def to_rgb(prefix, cin, upsample):
        layout[f"{prefix}.bias"], layout[f"{prefix}.conv.weight"] = (1, 3, 1, 1), (1, 3, cin, 1, 1)
        layout[f"{prefix}.conv.modulation.weight"], layout[f"{prefix}.conv.modulation.bias"] = (cin, 512), (cin,)
        if upsample:
            layout[f"{prefix}.upsample.kernel"] = (4, 4)

    styled_conv("conv1", 512, 512, False)
    to_rgb("to_rgb1", 512, False)
    block_channels = [512, 512, 512, 512, 256, 128, 64, 32]  # 8 .. 1024
    cin = 512
    for j, cout in enumerate(block_channels):
        styled_conv(f"convs.{2 * j}", cin, cout, True)
        styled_conv(f"convs.{2 * j + 1}", cout, cout, False)
        to_rgb(f"to_rgbs.{j}", cout, True)
        cin = cout
    for i, res in enumerate([4] + [2**k for k in range(3, 11) for _ in range(2)]):
        layout[f"noises.noise_{i}"] = (1, 1, res, res)
    return layout


def test_state_dict_layout_and_params_at_1024():
    with torch.device("meta"):
        generator = StyleGAN2Generator(1024)
    state = generator.state_dict()
    assert len(state) == 171
    assert {key: tuple(value.shape) for key, value in state.items()} == rosinality_generator_layout()
    assert sum(p.numel() for p in generator.parameters()) == 30_370_060
    assert sum(p.numel() for p in generator.style.parameters()) == 2_101_248
    assert generator.num_ws == generator.n_latent == 18
    assert generator.num_layers == 17
    assert generator.feature_channels(256) == 128 and generator.feature_channels(1024) == 32


@pytest.mark.parametrize("size", [8, 16, 64, 128, 256, 512])
def test_every_size_builds(size):
    with torch.device("meta"):
        generator = StyleGAN2Generator(size, n_mlp=2)
    log_size = size.bit_length() - 1
    assert generator.num_ws == 2 * log_size - 2
    assert len(generator.to_rgbs) == log_size - 2
    assert len(generator.state_dict()) == 4 + 1 + 5 + 4 + (log_size - 2) * (11 + 5) + generator.num_layers


def test_invalid_size():
    for size in (4, 48, 2048):
        with pytest.raises(ValueError, match="power of two"):
            StyleGAN2Generator(size)


def make_tiny_generator() -> StyleGAN2Generator:
    generator = StyleGAN2Generator(**TINY)
    with torch.no_grad():  # noise weights start at 0; make the noise visible
        for module in generator.modules():
            if isinstance(module, NoiseInjection):
                module.weight.fill_(0.5)
    return generator


def test_synthesize_shapes_and_features():
    generator = make_tiny_generator()
    assert generator.num_ws == 8 and generator.num_layers == 7
    w_plus = torch.randn(2, generator.num_ws, 32)
    out = generator.synthesize(w_plus, noise_mode="const", return_features=True)
    assert isinstance(out, SynthesisOutput)
    assert out.image.shape == (2, 3, 32, 32)
    assert sorted(out.features) == [4, 8, 16, 32]
    for res, feature in out.features.items():
        assert feature.shape == (2, generator.feature_channels(res), res, res)
    assert generator.synthesize(w_plus, noise_mode="const").features == {}


def test_w_plus_consumption():
    # w0 -> conv1; w1 -> to_rgb1 and the first 8x8 conv; w2 -> second 8x8 conv; w3 -> to_rgbs[0] and 16x16 ...
    generator = make_tiny_generator()
    w_plus = torch.randn(1, generator.num_ws, 32)
    base = generator.synthesize(w_plus, noise_mode="const", return_features=True)

    def changed(index):
        bumped = w_plus.clone()
        bumped[:, index] += 1
        out = generator.synthesize(bumped, noise_mode="const", return_features=True)
        changed_features = {res for res in out.features if not torch.equal(out.features[res], base.features[res])}
        return changed_features, not torch.equal(out.image, base.image)

    assert changed(0) == ({4, 8, 16, 32}, True)
    assert changed(1) == ({8, 16, 32}, True)
    assert changed(2) == ({8, 16, 32}, True)
    assert changed(3) == ({16, 32}, True)
    assert changed(6) == ({32}, True)
    assert changed(7) == (set(), True)  # the last code feeds only the final ToRGB


def test_noise_modes():
    generator = make_tiny_generator()
    w_plus = torch.randn(2, generator.num_ws, 32)
    const_a = generator.synthesize(w_plus, noise_mode="const").image
    const_b = generator.synthesize(w_plus, noise_mode="const").image
    assert torch.equal(const_a, const_b)  # bit-identical
    random_a = generator.synthesize(w_plus, noise_mode="random").image
    random_b = generator.synthesize(w_plus, noise_mode="random").image
    assert not torch.allclose(random_a, random_b)
    zero = generator.synthesize(w_plus, noise_mode="zero").image
    assert torch.equal(zero, generator.synthesize(w_plus, noise_mode="zero").image)
    assert not torch.allclose(zero, const_a)
    # A seeded torch.Generator makes random noise reproducible.
    seeded = [generator.synthesize(w_plus, rng=torch.Generator().manual_seed(3)).image for _ in range(2)]
    assert torch.equal(*seeded)
    # Explicit maps win over the mode; None entries follow it.
    stored = [getattr(generator.noises, f"noise_{i}") for i in range(generator.num_layers)]
    assert torch.equal(generator.synthesize(w_plus, noise_mode="random", noise=stored).image, const_a)
    all_none = [None] * generator.num_layers
    assert torch.equal(generator.synthesize(w_plus, noise_mode="zero", noise=all_none).image, zero)
    with pytest.raises(ValueError, match="noise_mode"):
        generator.synthesize(w_plus, noise_mode="fixed")
    with pytest.raises(ValueError, match="maps"):
        generator.synthesize(w_plus, noise=stored[:-1])


def test_gradient_flows_to_w_plus():
    generator = make_tiny_generator()
    w_plus = torch.randn(2, generator.num_ws, 32, requires_grad=True)
    generator.synthesize(w_plus, noise_mode="random").image.square().mean().backward()
    assert torch.all(w_plus.grad.abs().sum(-1) > 0)  # every code of every sample gets a gradient


def test_forward_mapping_truncation_and_mixing():
    generator = make_tiny_generator()
    z = torch.randn(2, 32)
    w = generator.mapping(z)
    expected = generator.synthesize(w.unsqueeze(1).repeat(1, generator.num_ws, 1), noise_mode="const").image
    assert torch.equal(generator([z], noise_mode="const").image, expected)
    assert torch.equal(generator(w, input_is_latent=True, noise_mode="const").image, expected)

    # psi = 0 collapses every z onto the truncation centre.
    centre = generator.mean_latent(64)
    assert centre.shape == (1, 32)
    truncated = generator([z], noise_mode="const", truncation=0.0, truncation_latent=centre).image
    torch.testing.assert_close(truncated[0], truncated[1])

    # Style mixing: codes [0, 3) from the first batch, the rest from the second.
    z2 = torch.randn(2, 32)
    w2 = generator.mapping(z2)
    mixed_w_plus = torch.cat([w.unsqueeze(1).repeat(1, 3, 1), w2.unsqueeze(1).repeat(1, 5, 1)], dim=1)
    mixed = generator([z, z2], inject_index=3, noise_mode="const").image
    assert torch.equal(mixed, generator.synthesize(mixed_w_plus, noise_mode="const").image)
    assert generator([z, z2], noise_mode="const").image.shape == (2, 3, 32, 32)


def test_rejects_bad_w_plus():
    generator = StyleGAN2Generator(**TINY)
    with pytest.raises(ValueError, match="w_plus"):
        generator.synthesize(torch.randn(2, generator.num_ws - 1, 32))
    with pytest.raises(ValueError, match="styles"):
        generator(torch.randn(2, generator.num_ws, 32))  # a W+ tensor passed as z


def test_unfused_modulated_convs_synthesize_the_same_images():
    generator = StyleGAN2Generator(**TINY).eval()
    with torch.no_grad():
        for name, parameter in generator.named_parameters():
            if name.endswith("noise.weight"):
                parameter.fill_(0.5)  # the fixed noise takes part
    w_plus = torch.randn(3, generator.num_ws, TINY["style_dim"])
    expected = generator.synthesize(w_plus, noise_mode="const", return_features=True)
    for module in generator.modules():
        if hasattr(module, "fused"):
            module.fused = False
    out = generator.synthesize(w_plus, noise_mode="const", return_features=True)
    torch.testing.assert_close(out.image, expected.image, rtol=1e-5, atol=1e-5)
    for resolution, feature in expected.features.items():
        torch.testing.assert_close(out.features[resolution], feature, rtol=1e-5, atol=1e-5)
