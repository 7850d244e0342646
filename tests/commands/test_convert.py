"""`grain convert`: public files in, safetensors out."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from grain_pl.commands import main
from grain_pl.networks import GRAIN
from grain_pl.networks.irse import IRSE50
from grain_pl.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
from grain_pl.weights.grain_checkpoint import load_grain
from grain_pl.weights.io import read_safetensors_metadata
from grain_pl.weights.stylegan2_rosinality import export_rosinality, load_stylegan2_prior


def test_convert_grain_chains_the_prior_and_the_official_parts(tiny_config, tmp_path, capsys):
    generator = StyleGAN2Generator(tiny_config.hr_size, style_dim=tiny_config.style_dim,
                                   n_mlp=tiny_config.mapping_layers, channel_max=tiny_config.generator_channel_max)
    prior = export_rosinality(generator, None, torch.full((tiny_config.style_dim,), 0.5), tmp_path / "prior.pt")
    output = tmp_path / "grain.safetensors"
    argv = ["convert", "grain", "--preset", "tiny-32-lr8", "--prior", str(prior), "-o", str(output),
            "--random-parts", "invrrdb", "code-stylegan", "fusion"]
    assert main(argv) == 0
    assert "prior.pt -> generator, latent_avg" in capsys.readouterr().out
    grain = load_grain(output)
    assert torch.equal(grain.latent_codes.latent_avg, torch.full((tiny_config.style_dim,), 0.5))
    assert torch.equal(grain.generator.style[1].weight, generator.style[1].weight)

    before = output.read_bytes()
    assert main(argv) == 2  # exists: refused, untouched
    assert "already exists" in capsys.readouterr().err
    assert output.read_bytes() == before
    assert main(argv + ["--overwrite"]) == 0


def test_convert_stylegan2_round_trips_through_safetensors(tmp_path):
    generator = StyleGAN2Generator(32, style_dim=32, n_mlp=2, channel_max=16)
    discriminator = StyleGAN2Discriminator(32, channel_max=16)
    source = export_rosinality(generator, discriminator, torch.randn(32), tmp_path / "prior.pt")
    assert main(["convert", "stylegan2", str(source), "-o", str(tmp_path / "prior.safetensors")]) == 0
    again, again_d, latent_avg = load_stylegan2_prior(tmp_path / "prior.safetensors")
    for key, value in generator.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    assert again_d is not None and torch.equal(again_d.final_linear[1].weight, discriminator.final_linear[1].weight)


def test_convert_irse50(tmp_path):
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in IRSE50().state_dict().items()}
    # one stored float per tensor keeps the file small; values are checked on two keys
    state = {key: torch.tensor(float(index % 7)).expand(shape).clone() if len(shape) == 0 else
             torch.tensor(float(index % 7)).expand(shape) for index, (key, shape) in enumerate(shapes.items())}
    torch.save(state, tmp_path / "model_ir_se50.pth")
    assert main(["convert", "irse50", str(tmp_path / "model_ir_se50.pth"), "-o", str(tmp_path / "ir.safetensors")]) == 0
    from safetensors.torch import load_file

    converted = load_file(str(tmp_path / "ir.safetensors"))
    assert set(converted) == set(shapes)
    assert torch.equal(converted["output_layer.3.weight"], state["output_layer.3.weight"].contiguous())


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    assert main(["convert", "stylegan2", str(tmp_path / "broken.pt"), "-o", str(tmp_path / "x.safetensors")]) == 2
    error = capsys.readouterr().err
    assert "broken.pt" in error and "cannot read it" in error
    assert not (tmp_path / "x.safetensors").exists()


def test_grain_builds_for_every_checkpoint_it_writes(tiny_config):
    assert GRAIN(tiny_config).config == tiny_config


def _tiny_prior_file(config, path):
    generator = StyleGAN2Generator(config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                   channel_max=config.generator_channel_max)
    return export_rosinality(generator, None, torch.zeros(config.style_dim), path)


def test_convert_grain_without_weight_files_writes_nothing(tmp_path, capsys):
    output = tmp_path / "grain.safetensors"
    assert main(["convert", "grain", "--preset", "tiny-32-lr8", "-o", str(output)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("grain convert: error: no weight file for --prior")
    assert all(option in error for option in ("--invrrdb", "--code-stylegan", "--fusion", "--random-parts"))
    assert not output.exists()


def test_convert_grain_random_parts_are_named_warned_and_recorded(tiny_config, tmp_path, capsys):
    prior = _tiny_prior_file(tiny_config, tmp_path / "prior.pt")
    output = tmp_path / "grain.safetensors"
    base = ["convert", "grain", "--preset", "tiny-32-lr8", "-o", str(output)]
    assert main(base + ["--prior", str(prior), "--random-parts", "invrrdb", "fusion"]) == 2  # code-stylegan: no file
    assert "no weight file for --code-stylegan" in capsys.readouterr().err and not output.exists()
    assert main(base + ["--prior", str(prior), "--random-parts", "prior"]) == 2  # a file and random: contradictory
    assert "--random-parts prior: a weight file was given for it as well" in capsys.readouterr().err

    assert main(base + ["--prior", str(prior), "--random-parts", "invrrdb", "code-stylegan", "fusion"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "warning" in line]
    assert len(warnings) == 3 and all("random weights" in line for line in warnings)
    assert "random: invrrdb, code-stylegan, fusion" in captured.out
    assert read_safetensors_metadata(output)["random_parts"] == "invrrdb,code-stylegan,fusion"


@pytest.mark.parametrize("failure", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_convert_write_failures_are_one_line_and_leave_nothing(failure, tmp_path, monkeypatch, capsys):
    """A full disk, a read-only file system, a folder we may not write to (simulated: the tests run as root)."""
    generator = StyleGAN2Generator(32, style_dim=32, n_mlp=2, channel_max=16)
    source = export_rosinality(generator, None, torch.randn(32), tmp_path / "prior.pt")
    out_dir = tmp_path / "out"
    out_dir.mkdir()

    def failing_fsync(descriptor):
        raise OSError(failure, os.strerror(failure))

    monkeypatch.setattr("grain_pl.io.files.os.fsync", failing_fsync)
    assert main(["convert", "stylegan2", str(source), "-o", str(out_dir / "prior.safetensors")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "prior.safetensors: cannot write it" in error
    assert os.strerror(failure) in error
    assert list(out_dir.iterdir()) == []  # no output, no temporary file


def test_convert_reports_a_malicious_pickle_by_its_blocked_call(tmp_path, capsys):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"g_ema": Payload()}, tmp_path / "evil.pt")
    assert main(["convert", "stylegan2", str(tmp_path / "evil.pt"), "-o", str(tmp_path / "x.safetensors")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "evil.pt: refused" in error and "system" in error
    assert "weights_only=False" not in error and "weights_only` set to `False" not in error
    assert not marker.exists() and not (tmp_path / "x.safetensors").exists()
