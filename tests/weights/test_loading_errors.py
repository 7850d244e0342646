"""Every model file that cannot be loaded is a CheckpointError naming the file and what is wrong with it, and
`grain decode --model` shows it as one line: a header written by a newer grain_pl (the unknown key and the
writing version), bad JSON, a config no GRAIN can be built from, a .ckpt whose entries have the wrong types."""

from __future__ import annotations

import json

import pytest
import torch

import grain_pl
from grain_pl.commands import main
from grain_pl.networks import GRAIN
from grain_pl.weights.grain_checkpoint import VERSION_KEY, load_grain, read_grain_config, save_grain
from grain_pl.weights.io import CheckpointError, read_safetensors_metadata
from grain_pl.weights.stage_checkpoint import load_grain_from_stage_checkpoint, read_stage_checkpoint


def model_file(tiny_config, path, **header):
    """A tiny grain_pl model file whose header entries `header` replace the ones save_grain writes."""
    return save_grain(GRAIN(tiny_config), path, **header)


def test_new_model_files_record_the_grain_pl_version(tiny_config, tmp_path):
    path = model_file(tiny_config, tmp_path / "model.safetensors")
    assert read_safetensors_metadata(path)[VERSION_KEY] == grain_pl.__version__


def test_a_key_from_a_newer_version_is_named_with_the_writing_version(tiny_config, tmp_path):
    config = {**tiny_config.as_dict(), "quantum_dither": 3}
    path = model_file(tiny_config, tmp_path / "newer.safetensors", config=json.dumps(config),
                      **{VERSION_KEY: "9.1.0"})
    with pytest.raises(CheckpointError, match=r"newer\.safetensors: .*'quantum_dither'.*grain_pl "
                                              + grain_pl.__version__ + r" does not know \(written by grain_pl 9\.1\.0"):
        load_grain(path)
    older = model_file(tiny_config, tmp_path / "unversioned.safetensors", config=json.dumps(config),
                       **{VERSION_KEY: ""})
    with pytest.raises(CheckpointError, match="does not say which grain_pl version wrote it"):
        read_grain_config(older)


@pytest.mark.parametrize("config, expected", [
    ("{not json", r"bad\.safetensors: its header's GRAIN config is not valid JSON"),
    ("[1, 2]", r"bad\.safetensors: its GRAIN config is a list, expected a dict"),
    (None, r"bad\.safetensors: its GRAIN config is not one grain_pl .* can build .*hr_size"),
])
def test_bad_header_configs_name_the_file(config, expected, tiny_config, tmp_path):
    if config is None:  # valid JSON, known keys, impossible values
        config = json.dumps({**tiny_config.as_dict(), "hr_size": 3})
    path = model_file(tiny_config, tmp_path / "bad.safetensors", config=config)
    with pytest.raises(CheckpointError, match=expected):
        load_grain(path)


def test_an_architecture_mismatch_names_the_file(tiny_config, tmp_path):
    path = model_file(tiny_config, tmp_path / "mismatch.safetensors",
                      config=json.dumps(tiny_config.replace(channels=16).as_dict()))
    with pytest.raises(CheckpointError, match=r"mismatch\.safetensors: does not fit GRAIN"):
        load_grain(path)


def test_decode_shows_a_bad_model_file_as_one_line(tiny_config, tmp_path, capsys):
    path = model_file(tiny_config, tmp_path / "newer.safetensors",
                      config=json.dumps({**tiny_config.as_dict(), "quantum_dither": 3}), **{VERSION_KEY: "9.1.0"})
    lr = tmp_path / "x.lr.png"
    lr.write_bytes(b"")  # never read: the model fails first
    assert main(["decode", str(lr), "--model", str(path), "-o", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "newer.safetensors" in error and "'quantum_dither'" in error, error


@pytest.mark.parametrize("checkpoint, expected", [
    ({"state_dict": [1, 2, 3]}, "its 'state_dict' is a list, expected a dict of tensors"),
    ({"state_dict": {"grain.encoder.x": "text"}}, "its 'state_dict' holds 'grain.encoder.x': str"),
    ({"state_dict": {"grain.encoder.x": torch.zeros(1)}, "hyper_parameters": [1]}, "its 'hyper_parameters' is a list"),
])
def test_a_ckpt_with_entries_of_the_wrong_type_names_the_file(checkpoint, expected, tmp_path):
    path = tmp_path / "odd.ckpt"
    torch.save(checkpoint, path)
    for load in (read_stage_checkpoint, load_grain_from_stage_checkpoint):
        with pytest.raises(CheckpointError, match=r"odd\.ckpt: .*" + expected.replace("(", r"\(").replace(")", r"\)")):
            load(path)


def test_a_ckpt_config_from_a_newer_version_is_named(tiny_config, tmp_path):
    state = {f"grain.{key}": value for key, value in GRAIN(tiny_config).state_dict().items()}
    torch.save({"state_dict": state, "grain_pl": {"config": {**tiny_config.as_dict(), "quantum_dither": 3},
                                                  VERSION_KEY: "9.1.0"}}, tmp_path / "newer.ckpt")
    with pytest.raises(CheckpointError, match=r"newer\.ckpt: .*'quantum_dither'.*written by grain_pl 9\.1\.0"):
        load_grain_from_stage_checkpoint(tmp_path / "newer.ckpt")


def test_stage_checkpoints_record_the_grain_pl_version():
    from grain_pl.losses import LossWeights
    from grain_pl.stages import Stage1

    stage = Stage1(network="tiny-32-lr8", loss_weights=LossWeights(identity=0.0, lpips=0.0), metrics_lpips=False)
    checkpoint = {"state_dict": {}}
    stage.on_save_checkpoint(checkpoint)
    assert checkpoint["grain_pl"][VERSION_KEY] == grain_pl.__version__
