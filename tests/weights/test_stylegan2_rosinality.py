"""rosinality StyleGAN2 checkpoints: split, infer, strict load with kernel rebuild, export, and clear errors."""

from __future__ import annotations

import argparse
import warnings

import pytest
import torch

from grain_pl.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from grain_pl.weights.io import CheckpointError, read_checkpoint
from grain_pl.weights.stylegan2_rosinality import (
    ROSINALITY_ALLOWED,
    export_rosinality,
    infer_generator_config,
    load_stylegan2_prior,
    restore_kernel_buffers,
    split_rosinality_checkpoint,
)

TINY_G = dict(size=32, style_dim=32, n_mlp=2, channel_multiplier=2, channel_max=16)


@pytest.fixture
def tiny_networks():
    torch.manual_seed(0)
    generator = StyleGAN2Generator(**TINY_G)
    with torch.no_grad():
        for name, param in generator.named_parameters():
            if name.endswith(("noise.weight", "activate.bias", "to_rgb1.bias")):
                param.normal_()  # non-default values, so a load that skips them is noticed
    discriminator = StyleGAN2Discriminator(32, channel_max=16)
    return generator, discriminator, torch.randn(32)


def save_rosinality_file(path, g_ema_state, d_state=None, latent_avg=None, args=True):
    """The exact layout rosinality's train.py / convert_weight.py write."""
    ckpt = {"g_ema": g_ema_state}
    if latent_avg is not None:
        ckpt["latent_avg"] = latent_avg
    if d_state is not None:
        ckpt["d"] = d_state
    if args:
        ckpt["args"] = argparse.Namespace(size=32, channel_multiplier=2, batch=4, r1=10.0, path="lmdb", wandb=False)
    torch.save(ckpt, path)
    return path


def render(generator, seed=0):
    w_plus = torch.randn(2, generator.num_ws, generator.style_dim, generator=torch.Generator().manual_seed(seed))
    return generator.synthesize(w_plus, noise_mode="const").image


def test_rosinality_file_loads_back(tmp_path, tiny_networks):
    generator, discriminator, latent_avg = tiny_networks
    path = save_rosinality_file(tmp_path / "prior.pt", generator.state_dict(), discriminator.state_dict(),
                                latent_avg)
    loaded_g, loaded_d, loaded_avg = load_stylegan2_prior(path)
    assert (loaded_g.size, loaded_g.style_dim, loaded_g.n_mlp, loaded_g.channels) == (32, 32, 2, generator.channels)
    for key, value in generator.state_dict().items():
        assert torch.equal(loaded_g.state_dict()[key], value), key
    for key, value in discriminator.state_dict().items():
        assert torch.equal(loaded_d.state_dict()[key], value), key
    assert torch.equal(loaded_avg, latent_avg)
    assert not loaded_g.training
    assert torch.equal(render(loaded_g), render(generator))
    assert load_stylegan2_prior(path, load_discriminator=False)[1] is None


def test_split(tiny_networks):
    generator, discriminator, latent_avg = tiny_networks
    state = generator.state_dict()
    prior = split_rosinality_checkpoint(
        {"g_ema": state, "g": {f"module.{k}": v for k, v in state.items()}, "latent_avg": latent_avg,
         "args": argparse.Namespace(size=32), "g_optim": {}, "ada_aug_p": 0.0}, "x.pt")
    assert prior.d is None and prior.args == {"size": 32}
    assert set(prior.g) == set(state)  # DataParallel's "module." is dropped
    with pytest.raises(CheckpointError, match=r"x\.pt.*g_ema"):
        split_rosinality_checkpoint({"g": state}, "x.pt")
    with pytest.raises(CheckpointError, match="bare generator state dict"):
        split_rosinality_checkpoint(state, "x.pt")


def test_infer_generator_config():
    assert infer_generator_config(StyleGAN2Generator(**TINY_G).state_dict()) == TINY_G
    expected = [
        dict(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=512),
        dict(size=256, style_dim=512, n_mlp=8, channel_multiplier=1, channel_max=512),
        dict(size=256, style_dim=64, n_mlp=4, channel_multiplier=4, channel_max=1024),
    ]
    for config in expected:
        with torch.device("meta"):  # shapes are all the inference needs
            state = StyleGAN2Generator(**config).state_dict()
        assert infer_generator_config(state) == config


def test_missing_kernel_buffers_are_rebuilt(tmp_path, tiny_networks):
    generator, discriminator, latent_avg = tiny_networks
    without_kernels = {k: v for k, v in generator.state_dict().items() if not k.endswith(".kernel")}
    d_without_kernels = {k: v for k, v in discriminator.state_dict().items() if not k.endswith(".kernel")}
    assert len(without_kernels) < len(generator.state_dict())
    path = save_rosinality_file(tmp_path / "no_kernels.pt", without_kernels, d_without_kernels, latent_avg)
    loaded_g, loaded_d, _ = load_stylegan2_prior(path)
    assert torch.equal(render(loaded_g), render(generator))
    image = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded_d(image), discriminator(image))

    # The rebuilt values, derived by hand: outer([1,3,3,1]) / 64, times 4 wherever the signal was upsampled.
    taps = torch.tensor([1.0, 3, 3, 1])
    blur = taps[:, None] * taps[None, :] / 64
    restored = restore_kernel_buffers(without_kernels, generator)
    assert torch.equal(restored["to_rgbs.0.upsample.kernel"], blur * 4)
    assert torch.equal(restored["convs.0.conv.blur.kernel"], blur * 4)
    assert torch.equal(restore_kernel_buffers(d_without_kernels, discriminator)["convs.1.skip.0.kernel"], blur)
    assert set(restored) == set(generator.state_dict())


@pytest.mark.parametrize(
    ("corruption", "offending_key"),
    [
        ("missing", "convs.1.conv.weight"),
        ("extra", "convs.0.conv.extra_weight"),
        ("shape", "style.1.bias"),
        ("missing_d", "final_linear.1.weight"),
    ],
)
def test_mismatches_name_the_file_and_the_key(tmp_path, tiny_networks, corruption, offending_key):
    generator, discriminator, latent_avg = tiny_networks
    g_state, d_state = dict(generator.state_dict()), dict(discriminator.state_dict())
    if corruption == "missing":
        del g_state[offending_key]
    elif corruption == "extra":
        g_state[offending_key] = torch.zeros(3)
    elif corruption == "shape":
        g_state[offending_key] = torch.zeros(33)
    else:
        del d_state[offending_key]
    path = save_rosinality_file(tmp_path / f"{corruption}.pt", g_state, d_state, latent_avg)
    with pytest.raises(CheckpointError) as error:
        load_stylegan2_prior(path)
    assert str(path) in str(error.value) and offending_key in str(error.value)


def test_truncated_file(tmp_path, tiny_networks):
    generator, discriminator, latent_avg = tiny_networks
    path = save_rosinality_file(tmp_path / "truncated.pt", generator.state_dict(), discriminator.state_dict(),
                                latent_avg)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=str(path)):
        load_stylegan2_prior(path)


def test_size_override_that_does_not_fit(tmp_path, tiny_networks):
    generator, _, latent_avg = tiny_networks
    path = save_rosinality_file(tmp_path / "g.pt", generator.state_dict(), latent_avg=latent_avg)
    with pytest.raises(CheckpointError, match=r"size=64.*missing 16 key\(s\): convs\.6\."):
        load_stylegan2_prior(path, size=64)


def test_missing_latent_avg_is_computed_with_a_warning(tmp_path, tiny_networks):
    generator, _, _ = tiny_networks
    path = save_rosinality_file(tmp_path / "no_avg.pt", generator.state_dict(), args=False)
    with pytest.warns(UserWarning, match="latent_avg"):
        loaded_g, loaded_d, avg = load_stylegan2_prior(path, latent_avg_samples=256)
    assert loaded_d is None and avg.shape == (32,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = load_stylegan2_prior(path, latent_avg_samples=256)[2]
    assert torch.equal(avg, again)  # fixed seed
    z = torch.randn(256, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(avg, loaded_g.mapping(z).mean(0).detach())


def test_export_round_trip(tmp_path, tiny_networks):
    generator, discriminator, latent_avg = tiny_networks
    path = tmp_path / "out" / "exported.pt"
    export_rosinality(generator, discriminator, latent_avg, path, g=generator, args={"size": 32, "iter": 10})
    raw = read_checkpoint(path, allow=ROSINALITY_ALLOWED)
    assert set(raw) == {"g_ema", "latent_avg", "d", "g", "args"}
    assert isinstance(raw["args"], argparse.Namespace) and raw["args"].iter == 10
    loaded_g, loaded_d, loaded_avg = load_stylegan2_prior(path)
    assert torch.equal(render(loaded_g), render(generator))
    assert torch.equal(loaded_avg, latent_avg)
    assert not list(path.parent.glob(".*tmp*"))  # no temporary file left behind

    with pytest.raises(FileExistsError):
        export_rosinality(generator, None, latent_avg, path)
    export_rosinality(generator, None, latent_avg, path, overwrite=True)
    assert set(read_checkpoint(path, allow=ROSINALITY_ALLOWED)) == {"g_ema", "latent_avg"}


def test_lost_last_mapping_layer_is_caught_through_args(tmp_path, tiny_networks):
    generator, _, latent_avg = tiny_networks
    state = {k: v for k, v in generator.state_dict().items() if not k.startswith("style.2.")}
    path = tmp_path / "lost_mapping.pt"
    torch.save({"g_ema": state, "latent_avg": latent_avg, "args": argparse.Namespace(n_mlp=2)}, path)
    with pytest.raises(CheckpointError, match=r"style\.2\.weight"):
        load_stylegan2_prior(path)
