"""Training's own failure modes: a full disk during a checkpoint save names the checkpoint; InitFromStage checks its
file before the fit (and reads it once) and refuses a last.ckpt that a later run's last-v1.ckpt made stale."""

from __future__ import annotations

import os
import time

import pytest
import torch

from grain_pl.losses import LossWeights
from grain_pl.networks import GRAIN
from grain_pl.stages import Stage2
from grain_pl.training import AtomicCheckpointIO, InitFromStage
from grain_pl.training.stage_init import newer_versions
from grain_pl.weights.io import CheckpointError


def test_a_full_disk_during_a_checkpoint_save_names_the_checkpoint(tmp_path, monkeypatch):
    last = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"marker": "first"}, last)

    def full_disk(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("grain_pl.io.files.os.fsync", full_disk)
    with pytest.raises(OSError, match=rf"^{last}: cannot write this checkpoint: No space left on device"):
        AtomicCheckpointIO().save_checkpoint({"marker": "second"}, last)
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["marker"] == "first"
    assert [path.name for path in tmp_path.iterdir()] == ["last.ckpt"]


def test_newer_versions_are_the_later_runs_checkpoints(tmp_path):
    last = tmp_path / "last.ckpt"
    last.write_bytes(b"earlier")
    (tmp_path / "last-vx.ckpt").write_bytes(b"not Lightning's naming")
    assert newer_versions(last) == []
    older = time.time() - 100
    (tmp_path / "last-v1.ckpt").write_bytes(b"")
    os.utime(tmp_path / "last-v1.ckpt", (older, older))  # a resumed last.ckpt is newer than it: not stale
    assert newer_versions(last) == []
    (tmp_path / "last-v2.ckpt").write_bytes(b"later")
    assert newer_versions(last) == [tmp_path / "last-v2.ckpt"]


@pytest.fixture
def stage2(tiny_config, tmp_path):
    from grain_pl.networks.stylegan2 import StyleGAN2Generator
    from grain_pl.weights.stylegan2_rosinality import export_rosinality

    generator = StyleGAN2Generator(32, style_dim=tiny_config.style_dim, n_mlp=tiny_config.mapping_layers,
                                   channel_max=tiny_config.generator_channel_max)
    prior = export_rosinality(generator, None, torch.zeros(tiny_config.style_dim), tmp_path / "prior.pt")
    return Stage2(network="tiny-32-lr8", prior_path=str(prior), metrics_lpips=False,
                  loss_weights=LossWeights(identity=0.0, lpips=0.0, adversarial=0.0))


def test_init_from_checks_before_the_fit_and_reads_once(stage2, tiny_config, tmp_path, monkeypatch):
    source = GRAIN(tiny_config)
    torch.save({"state_dict": {f"grain.{key}": value for key, value in source.state_dict().items()}},
               tmp_path / "stage1.ckpt")
    callback = InitFromStage(str(tmp_path / "stage1.ckpt"))
    callback.check(stage2)
    assert not all(torch.equal(stage2.grain.encoder.state_dict()[key], value)  # checked, not loaded yet
                   for key, value in source.encoder.state_dict().items())
    (tmp_path / "stage1.ckpt").unlink()  # on_fit_start loads what check() read
    callback.on_fit_start(type("Trainer", (), {"ckpt_path": None})(), stage2)
    for key, value in source.encoder.state_dict().items():
        assert torch.equal(stage2.grain.encoder.state_dict()[key], value), key
    assert stage2.hparams["init_from"]["parts"] == ["encoder", "decoder"]


def test_init_from_refuses_a_stale_last_ckpt(stage2, tiny_config, tmp_path):
    state = {f"grain.{key}": value for key, value in GRAIN(tiny_config).state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "last.ckpt")
    later = time.time() + 5
    torch.save({"state_dict": state}, tmp_path / "last-v1.ckpt")
    os.utime(tmp_path / "last-v1.ckpt", (later, later))
    with pytest.raises(CheckpointError, match=r"last\.ckpt: an earlier run's checkpoint: last-v1\.ckpt"):
        InitFromStage(str(tmp_path / "last.ckpt")).check(stage2)
