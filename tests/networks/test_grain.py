"""The composed network on tiny presets: shapes at every arrow, gradient flow, determinism, bad input."""

from __future__ import annotations

import pytest
import torch

from grain_pl.networks import GRAIN, GrainConfig, get_preset


@pytest.fixture
def grain(tiny_config) -> GRAIN:
    return GRAIN(tiny_config)


@pytest.mark.parametrize("name", ["tiny-32-lr8", "tiny-64-lr8", "tiny-64-lr4"])
def test_shapes_at_every_arrow(name):
    config = get_preset(name)
    grain = GRAIN(config).eval()
    hr = torch.rand(2, 3, config.hr_size, config.hr_size) * 2 - 1
    with torch.no_grad():
        out = grain(hr, return_features=True)
    lr_shape = (2, 3, config.lr_size, config.lr_size)
    hr_shape = (2, 3, config.hr_size, config.hr_size)
    assert out.lr.shape == lr_shape
    assert out.y_inv.shape == hr_shape
    assert out.w_plus.shape == (2, config.num_ws, config.style_dim)
    assert out.prior_image.shape == hr_shape
    assert out.hr_out.shape == hr_shape
    assert sorted(out.decoder_features) == list(config.decoder_resolutions)
    for resolution, feature in out.decoder_features.items():
        assert feature.shape == (2, config.channels, resolution, resolution)
    for resolution in config.fusion_resolutions:
        assert out.prior_features[resolution].shape == (2, config.generator_channels(resolution), resolution,
                                                        resolution)


def test_features_only_when_asked(grain, tiny_config):
    out = grain(torch.zeros(1, 3, tiny_config.hr_size, tiny_config.hr_size))
    assert out.decoder_features is None and out.prior_features is None


def test_gradients_reach_every_trainable_part_but_not_the_prior(grain, tiny_config):
    grain.train()
    hr = torch.rand(2, 3, tiny_config.hr_size, tiny_config.hr_size) * 2 - 1
    out = grain(hr)
    (out.hr_out.square().mean() + out.y_inv.square().mean() + out.lr.square().mean()).backward()
    for part in ("encoder", "decoder", "fusion"):
        grads = [p.grad for p in getattr(grain, part).parameters()]
        assert all(g is not None for g in grads), part
        assert sum(g.abs().sum() for g in grads) > 0, part
    # the latent codes get gradients through the frozen generator (w_{last} feeds only the last ToRGB)
    assert grain.latent_codes.blocks[0].even_linear.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in grain.generator.parameters())
    assert not any(p.requires_grad for p in grain.generator.parameters())


def test_eval_decoding_is_deterministic(grain, tiny_config):
    grain.eval()
    with torch.no_grad():
        for name, parameter in grain.generator.named_parameters():
            if name.endswith("noise.weight"):
                parameter.fill_(1.0)
    hr = torch.rand(1, 3, tiny_config.hr_size, tiny_config.hr_size) * 2 - 1
    with torch.no_grad():
        first, second = grain(hr), grain(hr)
    assert torch.equal(first.lr, second.lr)
    assert torch.equal(first.hr_out, second.hr_out)


def test_training_mode_draws_fresh_prior_noise(grain, tiny_config):
    grain.train()
    lr = torch.zeros(1, 3, tiny_config.lr_size, tiny_config.lr_size)
    with torch.no_grad():
        for name, parameter in grain.generator.named_parameters():
            if name.endswith("noise.weight"):  # rosinality initialises noise strengths to 0
                parameter.fill_(1.0)
        assert not torch.equal(grain.decode(lr).prior_image, grain.decode(lr).prior_image)


def test_generator_stays_in_eval_mode(grain):
    grain.train()
    assert grain.training and not grain.generator.training


def test_latent_avg_is_the_offset_of_the_codes(grain, tiny_config):
    grain.eval()
    lr = torch.zeros(1, 3, tiny_config.lr_size, tiny_config.lr_size)
    with torch.no_grad():
        before = grain.decode(lr).w_plus
        grain.set_latent_avg(torch.ones(tiny_config.style_dim))
        after = grain.decode(lr).w_plus
    assert torch.allclose(after - before, torch.ones_like(before))
    assert "latent_codes.latent_avg" in grain.state_dict()


def test_checkpointing_gives_the_same_values_and_gradients(tiny_config):
    hr = torch.rand(1, 3, tiny_config.hr_size, tiny_config.hr_size) * 2 - 1
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        grain = GRAIN(tiny_config, checkpointing=checkpointing).eval()
        out = grain(hr)
        out.hr_out.mean().backward()
        results.append((out.hr_out.detach(), grain.encoder.conv_first.weight.grad.clone()))
    assert torch.allclose(results[0][0], results[1][0])
    assert torch.allclose(results[0][1], results[1][1], atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (1, 1, 32, 32), (1, 4, 32, 32), (3, 32, 32), (1, 3, 32, 16)])
def test_wrong_hr_shape_names_expected_and_given(grain, shape):
    with pytest.raises(ValueError, match=r"hr must have shape \(B, 3, 32, 32\), got " + str(shape).replace("(", r"\(")
                       .replace(")", r"\)")):
        grain(torch.zeros(shape))


def test_lr_of_the_wrong_size_is_refused(grain):
    with pytest.raises(ValueError, match=r"lr must have shape \(B, 3, 8, 8\), got \(1, 3, 16, 16\)"):
        grain.decode(torch.zeros(1, 3, 16, 16))


@pytest.mark.parametrize("changes, message", [
    (dict(hr_size=48), "hr_size must be a power of two"),
    (dict(lr_size=64, hr_size=64), "must be smaller than hr_size"),
    (dict(decoder_blocks=(1, 1)), "one count per decoder scale"),
])
def test_bad_configs_are_explained(changes, message):
    with pytest.raises(ValueError, match=message):
        GrainConfig(**{**get_preset("tiny-32-lr8").as_dict(), **changes})


def test_fusion_merge_equals_the_literal_formula(tiny_config):
    """Fusion computes head(SE(cat(upsampled branches))) branch by branch; check it against the literal one."""
    import torch.nn.functional as F

    from grain_pl.networks.fusion import Fusion

    fusion = Fusion((8, 16, 32), decoder_channels=4, prior_channels={8: 6, 16: 5, 32: 3},
                    branch_channels=(6, 4, 2), head_channels=(5,), se_reduction=2)
    branches = [torch.randn(2, 6, 8, 8), torch.randn(2, 4, 16, 16), torch.randn(2, 2, 32, 32)]
    upsampled = [F.interpolate(b, size=(32, 32), mode="nearest") for b in branches]
    literal = fusion.head(fusion.merge_se(torch.cat(upsampled, dim=1)))
    assert torch.allclose(fusion._merge(*branches), literal, atol=1e-5)
