"""`grain fit` on bad input: one error line naming the setting and the file, found before anything is written
(no run folder, no W&B run); `--debug` shows the traceback. A second run of a stage never writes beside the
first one's checkpoints, so the next stage's `init_from: .../last.ckpt` cannot start from a stale run."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from grain_pl.commands import lightning_cli, main
from grain_pl.commands.fit import FitSettingError, guard_checkpoint_folders
from grain_pl.networks import GRAIN, get_preset

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
PRESET = "tiny-32-lr8"


def fit_args(stage: str, *extra: str) -> list[str]:
    return ["fit", "--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "stages" / f"{stage}.yaml"),
            "--config", str(CONF / "overlays" / "tiny.yaml"), *extra]


def tiny_prior(path: Path) -> Path:
    from grain_pl.networks.stylegan2 import StyleGAN2Discriminator, StyleGAN2Generator
    from grain_pl.weights.stylegan2_rosinality import export_rosinality

    config = get_preset(PRESET)
    generator = StyleGAN2Generator(32, style_dim=config.style_dim, n_mlp=config.mapping_layers,
                                   channel_max=config.generator_channel_max)
    return export_rosinality(generator, StyleGAN2Discriminator(32, channel_max=config.generator_channel_max),
                             torch.zeros(config.style_dim), path)


def stage_checkpoint(path: Path, stage: str = "Stage1") -> Path:
    """A checkpoint with the `grain.*` tensors a stage 1 run leaves (enough for --init_from)."""
    state = {f"grain.{key}": value for key, value in GRAIN(get_preset(PRESET)).state_dict().items()
             if not key.startswith("generator.")}
    torch.save({"state_dict": state, "hyper_parameters": {"stage": stage}}, path)
    return path


def malicious(path: Path, marker: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    torch.save({"state_dict": Payload()}, path)
    return path


@pytest.fixture
def workspace(tmp_path, monkeypatch, isolated_wandb, image_dir):
    """tmp_path as the working folder, with W&B offline (the default logger: it must not start), a tiny prior,
    a valid stage-1 checkpoint where conf/stages/stage2.yaml's init_from looks, and the images."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    prior = tiny_prior(tmp_path / "prior.pt")
    (tmp_path / "runs" / "stage1" / "checkpoints").mkdir(parents=True)
    stage_checkpoint(tmp_path / "runs" / "stage1" / "checkpoints" / "last.ckpt")
    return SimpleNamespace(root=tmp_path, prior=prior, images=image_dir, marker=tmp_path / "pwned")


def one_error_line(capsys) -> str:
    error = capsys.readouterr().err
    lines = [line for line in error.splitlines() if line.startswith("grain fit: error:")]
    assert len(lines) == 1 and "Traceback" not in error, error
    assert "args parameter" not in error
    return lines[0]


CASES = {  # name: (extra arguments, the setting, text the line must hold)
    "missing data folder": (["--data.data_dir", "{root}/nowhere"], "--data.data_dir", "nowhere: no such folder"),
    "empty data folder": (["--data.data_dir", "{root}/runs/stage1"], "--data.data_dir", "no image files"),
    "wrong preset": (["--model.init_args.network", "tiny-33"], "--model.init_args.network", "no such preset"),
    "negative batch size": (["--data.batch_size", "-2"], "--data.batch_size", "-2: must be 1 or more"),
    "missing prior": (["--model.init_args.prior_path", "{root}/none.pt"], "--model.init_args.prior_path",
                      "none.pt: no such file"),
    "malicious prior": (["--model.init_args.prior_path", "{root}/evil.pt"], "--model.init_args.prior_path",
                        "evil.pt: refused: its pickle asks for posix.system"),
    "missing init_from": (["--init_from", "{root}/none.ckpt"], "--init_from", "none.ckpt: no such checkpoint"),
    "malicious init_from": (["--init_from", "{root}/evil.pt"], "--init_from", "evil.pt: refused"),
    "init_from of another preset": (["--init_from", "{root}/other.ckpt"], "--init_from",
                                    "other.ckpt: does not fit grain.encoder of Stage2"),
    "missing ckpt_path": (["--ckpt_path", "{root}/none.ckpt"], "--ckpt_path", "none.ckpt: no such checkpoint"),
    "malicious ckpt_path": (["--ckpt_path", "{root}/evil.pt"], "--ckpt_path", "evil.pt: refused"),
    "ckpt_path of another stage": (["--ckpt_path", "{root}/runs/stage1/checkpoints/last.ckpt"], "--ckpt_path",
                                   "a Stage1 checkpoint, but the model is Stage2"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_settings_are_one_line_before_anything_is_written(case, workspace, capsys):
    extra, setting, expected = CASES[case]
    root = workspace.root
    malicious(root / "evil.pt", workspace.marker)
    other = get_preset(PRESET).replace(channels=4)
    torch.save({"state_dict": {f"grain.{key}": value for key, value in GRAIN(other).state_dict().items()}},
               root / "other.ckpt")
    arguments = fit_args("stage2", "--data.data_dir", str(workspace.images),
                         "--model.init_args.prior_path", str(workspace.prior),
                         *[argument.format(root=root) for argument in extra])
    assert main(arguments) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"grain fit: error: {setting} ") and expected in line, line
    assert not (root / "runs" / "stage2").exists() and not (root / "wandb_home").exists()
    assert not workspace.marker.exists()


def test_an_existing_export_file_is_refused_before_the_run(workspace, capsys):
    (workspace.root / "grain.safetensors").write_bytes(b"the user's model")
    assert main(fit_args("final", "--data.data_dir", str(workspace.images), "--model.init_args.prior_path",
                         str(workspace.prior), "--model.init_args.export_path", "grain.safetensors",
                         "--init_from", "runs/stage1/checkpoints/last.ckpt")) == 2
    line = one_error_line(capsys)
    assert "--model.init_args.export_path grain.safetensors: already exists" in line
    assert not (workspace.root / "runs" / "final").exists()
    assert (workspace.root / "grain.safetensors").read_bytes() == b"the user's model"


def test_debug_shows_the_traceback(workspace, monkeypatch):
    arguments = fit_args("stage1", "--data.data_dir", "nowhere")
    with pytest.raises(FitSettingError, match="--data.data_dir nowhere: no such folder"):
        main([*arguments, "--debug"])
    monkeypatch.setenv("GRAIN_PL_DEBUG", "1")
    with pytest.raises(FitSettingError):
        main(arguments)


def test_a_rerun_into_a_filled_checkpoint_folder_is_refused(workspace, capsys):
    last = workspace.root / "runs" / "stage1" / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    assert main(fit_args("stage1", "--data.data_dir", str(workspace.images))) == 2
    line = one_error_line(capsys)
    assert "runs/stage1/checkpoints: already holds the checkpoints of an earlier run (last.ckpt)" in line
    assert "--ckpt_path" in line and "--start_over" in line
    assert last.read_bytes() == before
    assert sorted(path.name for path in (workspace.root / "runs" / "stage1").iterdir()) == ["checkpoints"]


def test_start_over_moves_the_earlier_run_aside_and_resuming_keeps_it(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"earlier run")
    trainer = SimpleNamespace(checkpoint_callbacks=[SimpleNamespace(dirpath=str(folder))])
    with pytest.raises(FitSettingError, match="already holds"):
        guard_checkpoint_folders(trainer, resuming=False, start_over=False)
    assert guard_checkpoint_folders(trainer, resuming=True, start_over=False) == []  # --ckpt_path: same run
    assert (folder / "last.ckpt").exists()

    (moved_line,) = guard_checkpoint_folders(trainer, resuming=False, start_over=True)
    (aside,) = [path for path in tmp_path.iterdir() if path.name.startswith("checkpoints.previous-")]
    assert str(aside) in moved_line and (aside / "last.ckpt").read_bytes() == b"earlier run"
    assert not folder.exists()
    assert guard_checkpoint_folders(trainer, resuming=False, start_over=False) == []  # nothing left to guard


def test_init_from_refuses_a_last_ckpt_older_than_its_versioned_sibling(workspace, capsys):
    """Folders filled before the guard existed: last-v1.ckpt (the later run) beside last.ckpt (the earlier)."""
    stage_checkpoint(workspace.root / "runs" / "stage1" / "checkpoints" / "last-v1.ckpt")
    assert main(fit_args("stage2", "--data.data_dir", str(workspace.images), "--model.init_args.prior_path",
                         str(workspace.prior))) == 2
    line = one_error_line(capsys)
    assert "--init_from runs/stage1/checkpoints/last.ckpt: an earlier run's checkpoint: last-v1.ckpt" in line
    assert not (workspace.root / "runs" / "stage2").exists()


def test_no_args_parameter_warning(tmp_path, monkeypatch, image_dir):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    arguments = fit_args("stage1", "--data.data_dir", str(image_dir))[1:]
    monkeypatch.setattr(sys, "argv", ["grain", "fit", *arguments])  # what `grain fit ...` sees
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        lightning_cli(arguments, run=False)
    assert not [warning for warning in caught if "args parameter" in str(warning.message)]


@pytest.mark.slow  # two tiny fits of stage 1
def test_a_second_run_of_a_stage_never_leaves_a_stale_last_ckpt(tmp_path, monkeypatch, image_dir, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAIN_PL_NO_WANDB", "1")
    base = fit_args("stage1", "--data.data_dir", str(image_dir), "--trainer.enable_model_summary", "false")
    last = tmp_path / "runs" / "stage1" / "checkpoints" / "last.ckpt"
    assert main([*base, "--model.init_args.max_iterations", "1"]) == 0
    assert torch.load(last, weights_only=True)["grain_pl"]["iteration"] == 1
    assert main([*base, "--model.init_args.max_iterations", "2"]) == 2  # refused: the first run is kept
    assert "already holds" in capsys.readouterr().err
    assert main([*base, "--model.init_args.max_iterations", "2", "--start_over"]) == 0
    checkpoints = sorted(path.name for path in last.parent.iterdir())
    assert checkpoints == ["last.ckpt"], checkpoints  # no last-v1.ckpt: stage 2's init_from finds this run
    assert torch.load(last, weights_only=True)["grain_pl"]["iteration"] == 2
    (aside,) = (tmp_path / "runs" / "stage1").glob("checkpoints.previous-*")
    assert torch.load(aside / "last.ckpt", weights_only=True)["grain_pl"]["iteration"] == 1


def test_a_binary_config_file_is_named(tmp_path, capsys):
    binary = tmp_path / "photo.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    assert main(["fit", "--config", str(binary)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"grain fit: error: --config {binary}: not a YAML text file" in error
