"""Resuming a killed run, and checkpoint files that survive a kill during their own write.

The resume test runs `grain fit` the way a user does (conf/trainer.yaml + conf/stages/stage1.yaml +
conf/overlays/tiny.yaml) in a subprocess, lets it write `last.ckpt` after every step, SIGKILLs it in the middle of
an epoch (often while it is writing a checkpoint), and resumes it with `--ckpt_path .../last.ckpt`. The resumed
process must start exactly where the checkpoint says (iteration, loop counters, Adam state, GradScaler state under
16-mixed, weights) and stop at `max_iterations`.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.precision import MixedPrecision
from resume_probe import (  # tests/stages, on sys.path
    ResumeProbe,
    adam_moment_fingerprint,
    adam_steps,
    weights_fingerprint,
)

from grain_pl.commands import lightning_cli
from grain_pl.losses import LossWeights
from grain_pl.stages import Stage1
from grain_pl.training.checkpoint_io import PARTIAL_SUFFIX, AtomicCheckpointIO, atomic_torch_save, partial_path

PRESET = "tiny-32-lr8"
REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
PROBE_DIR = Path(__file__).resolve().parent  # resume_probe.py, importable by the subprocess via PYTHONPATH
KILL_DURING_SAVE_SCRIPT = PROBE_DIR / "kill_during_save.py"

IMAGE_COUNT = 24  # conf/overlays/tiny.yaml keeps 25% for validation: 18 training images
BATCHES_PER_EPOCH = 18  # batch size 1: long epochs, so the kill lands mid-epoch
KILL_AT_ITERATION = 4  # kill once last.ckpt holds at least this many iterations
RESUMED_ITERATIONS = 3  # then train this many more
STAGE1_D_EVERY = Stage1.default_d_every  # a discriminator step at iterations 0, 6, 12, ... (no R1 in stage 1)
RUN_DIR = Path("runs/stage1")  # conf/stages/stage1.yaml, relative to the subprocess's working directory
PROCESS_TIMEOUT_S = 150.0  # per phase; a healthy phase takes 10-20 s on two slow cores


def discriminator_steps_after(iterations: int) -> int:
    return math.ceil(iterations / STAGE1_D_EVERY)


def global_step_after(iterations: int) -> int:
    """Lightning's global_step counts every optimizer step in manual optimization: G steps plus D steps."""
    return iterations + discriminator_steps_after(iterations)


@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    """IMAGE_COUNT smooth random 32x32 PNGs (as tests/stages/conftest.py makes, but more of them)."""
    folder = tmp_path_factory.mktemp("resume_images")
    rng = np.random.default_rng(0)
    for index in range(IMAGE_COUNT):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((32, 32), Image.BICUBIC).save(folder / f"{index:02d}.png")
    return folder


def grain_command() -> list[str]:
    """The installed `grain` entry point next to this interpreter, or the same main() through -m."""
    entry_point = Path(sys.executable).with_name("grain")
    return [str(entry_point)] if entry_point.exists() else [sys.executable, "-m", "grain_pl.commands"]


def fit_arguments(image_dir: Path, probe_log: Path, precision: str, accelerator: str, max_iterations: int,
                  ckpt_path: Path | None = None) -> list[str]:
    callbacks = [  # replaces conf/stages/stage1.yaml's list: last.ckpt after every step, nothing else on disk
        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint",
         "init_args": {"dirpath": str(RUN_DIR / "checkpoints"), "save_last": True, "every_n_train_steps": 1,
                       "save_top_k": 0}},
        {"class_path": "resume_probe.ResumeProbe", "init_args": {"path": str(probe_log)}},
    ]
    arguments = [
        "fit", "--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "stages" / "stage1.yaml"),
        "--config", str(CONF / "overlays" / "tiny.yaml"),
        "--data.data_dir", str(image_dir), "--data.batch_size", "1",
        "--model.init_args.max_iterations", str(max_iterations),
        "--trainer.accelerator", accelerator, "--trainer.precision", precision,
        "--trainer.val_check_interval", "3",  # a validation run before the kill, and one after the resume
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.logger", "false",  # tests/test_wandb_offline.py covers W&B; here it would only cost time
        "--trainer.callbacks", json.dumps(callbacks),
    ]
    if ckpt_path is not None:
        arguments += ["--ckpt_path", str(ckpt_path)]
    return arguments


def subprocess_environment(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1",  # W&B offline should a conf use it
               PYTHONPATH=os.pathsep.join(filter(None, [str(PROBE_DIR), env.get("PYTHONPATH")])))
    for variable in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        env[variable] = str(tmp_path / "wandb_home")
    env.pop("GRAIN_PL_NO_WANDB", None)
    return env


def start(arguments: list[str], tmp_path: Path, log_name: str) -> subprocess.Popen:
    log = (tmp_path / log_name).open("wb")  # a file, not a pipe: a chatty child can never block on it
    # A session of its own, so the finally can end the whole group (any helper process included).
    return subprocess.Popen([*grain_command(), *arguments], cwd=tmp_path, env=subprocess_environment(tmp_path),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def end_process_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the group we started (start_new_session: pgid == pid)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


def output_of(tmp_path: Path, log_name: str) -> str:
    return (tmp_path / log_name).read_text(errors="replace")[-6000:]


def file_version(path: Path) -> tuple[int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns  # a replaced file has a new inode, a rewritten one a new mtime


def saved_iteration(path: Path) -> int | None:
    """The iteration stored in a checkpoint, or None while it does not exist (mmap: the tensors stay unread)."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError):  # not there yet, or half-written (unprotected)
        return None
    return int(checkpoint["grain_pl"]["iteration"])


def step_count(distinct_steps: list[int]) -> int:
    """The one Adam step count shared by an optimizer's parameters (0 before its first step)."""
    assert len(distinct_steps) <= 1, f"parameters of one optimizer at different steps: {distinct_steps}"
    return distinct_steps[0] if distinct_steps else 0


def probe_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def epoch_batches(probe_log: Path, epoch: int = 0) -> dict[int, list[str]]:
    """{batch index: image paths} of the training batches a run began in `epoch`."""
    return {record["batch_idx"]: record["paths"] for record in probe_records(probe_log)
            if record["event"] == "batch" and record["epoch"] == epoch}


def only_event(records: list[dict[str, Any]], event: str) -> dict[str, Any]:
    matching = [record for record in records if record["event"] == event]
    assert len(matching) == 1, (event, records)
    return matching[0]


def train_until_killed(image_dir: Path, tmp_path: Path, precision: str, accelerator: str) -> Path:
    """Phase 1: train with a far-away max_iterations and SIGKILL the process once last.ckpt holds
    KILL_AT_ITERATION iterations. Returns last.ckpt."""
    last = tmp_path / RUN_DIR / "checkpoints" / "last.ckpt"
    process = start(fit_arguments(image_dir, tmp_path / "probe_killed.jsonl", precision, accelerator, 1000),
                    tmp_path, "killed.log")
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        seen_version = None
        while True:
            assert process.poll() is None, f"training ended before the kill:\n{output_of(tmp_path, 'killed.log')}"
            assert time.monotonic() < deadline, f"no checkpoint in time:\n{output_of(tmp_path, 'killed.log')}"
            version = file_version(last)
            if version is not None and version != seen_version:  # read each new file once: the CPUs are few
                seen_version = version
                if (saved_iteration(last) or 0) >= KILL_AT_ITERATION:
                    break
            time.sleep(0.1)
        os.kill(process.pid, signal.SIGKILL)  # the training process itself, wherever it is (maybe mid-save)
        assert process.wait(timeout=30) == -signal.SIGKILL
    finally:
        end_process_group(process)
    return last


def resume(image_dir: Path, tmp_path: Path, precision: str, accelerator: str, max_iterations: int,
           last: Path) -> None:
    """Phase 2: `grain fit ... --ckpt_path last.ckpt` until max_iterations."""
    process = start(fit_arguments(image_dir, tmp_path / "probe_resumed.jsonl", precision, accelerator,
                                  max_iterations, ckpt_path=last), tmp_path, "resumed.log")
    try:
        try:
            return_code = process.wait(timeout=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the resumed fit did not end in {PROCESS_TIMEOUT_S} s:\n{output_of(tmp_path, 'resumed.log')}")
        assert return_code == 0, f"the resumed fit failed ({return_code}):\n{output_of(tmp_path, 'resumed.log')}"
    finally:
        end_process_group(process)


PRECISIONS = [
    pytest.param("32-true", "cpu", id="32-true"),
    pytest.param("16-mixed", "gpu", id="16-mixed-gradscaler",
                 marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="16-mixed (GradScaler) needs CUDA")),
]


@pytest.mark.slow  # a subprocess or a whole training chain: `make test-fast` skips it
@pytest.mark.parametrize("precision, accelerator", PRECISIONS)
def test_a_killed_run_resumes_from_last_at_the_saved_step(precision, accelerator, many_images, tmp_path):
    last = train_until_killed(many_images, tmp_path, precision, accelerator)

    killed = torch.load(last, map_location="cpu", weights_only=True)  # complete and loadable after the kill
    iteration = killed["grain_pl"]["iteration"]
    assert iteration >= KILL_AT_ITERATION
    # batches of this epoch done ("completed" lags by one in a checkpoint written at on_train_batch_end)
    batches_done = killed["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    assert killed["epoch"] == 0 and 0 < batches_done < BATCHES_PER_EPOCH, "the kill was meant to be mid-epoch"
    assert killed["global_step"] == global_step_after(iteration)
    generator_state, discriminator_state = (optimizer["state"] for optimizer in killed["optimizer_states"])
    saved_adam_steps = [adam_steps(generator_state), adam_steps(discriminator_state)]
    scaler_key = "MixedPrecision"  # where Lightning keeps the precision plugin's state (the GradScaler's)
    with_scaler = precision == "16-mixed"
    if with_scaler:  # the GradScaler skips the Adam steps whose gradients overflowed: at most one per iteration
        assert {"scale", "_growth_tracker"} <= set(killed[scaler_key]), killed.get(scaler_key)
        assert step_count(saved_adam_steps[0]) <= iteration
        assert step_count(saved_adam_steps[1]) <= discriminator_steps_after(iteration)
    else:
        assert saved_adam_steps == [[iteration], [discriminator_steps_after(iteration)]]

    max_iterations = iteration + RESUMED_ITERATIONS
    resume(many_images, tmp_path, precision, accelerator, max_iterations, last)

    records = probe_records(tmp_path / "probe_resumed.jsonl")
    started, first_batch, ended = (only_event(records, name) for name in ("train_start", "first_batch", "train_end"))
    # Restored before the first batch: counters, optimizer state and weights of the killed run, not fresh ones.
    assert started["iteration"] == iteration and started["discriminator_steps"] == discriminator_steps_after(iteration)
    assert started["global_step"] == killed["global_step"]
    assert (started["epoch"], started["batches_done_in_epoch"]) == (0, batches_done)
    assert started["adam_steps"] == saved_adam_steps
    # (sums in float64; the tolerance only covers a GPU's other summation order)
    assert started["adam_moments"] == pytest.approx(
        [adam_moment_fingerprint(state) for state in (generator_state, discriminator_state)], rel=1e-9, abs=1e-9)
    assert started["weights"] == pytest.approx(weights_fingerprint(killed["state_dict"]), rel=1e-9, abs=1e-9)
    if with_scaler:
        assert started["scaler"] == {key: float(value) for key, value in killed[scaler_key].items()}
    # The epoch goes on where it stopped: at the saved batch index, with the images the killed run would have
    # trained on next (ResumableSampler), never again with those it already trained on.
    assert first_batch["batch_idx"] == batches_done and first_batch["iteration"] == iteration
    killed_batches = epoch_batches(tmp_path / "probe_killed.jsonl")
    resumed_batches = epoch_batches(tmp_path / "probe_resumed.jsonl")
    assert sorted(resumed_batches) == list(range(batches_done, batches_done + RESUMED_ITERATIONS))
    trained_before = {path for index in range(batches_done) for path in killed_batches[index]}
    assert len(trained_before) == batches_done  # batch size 1, no image twice within an epoch
    assert not trained_before & {path for paths in resumed_batches.values() for path in paths}
    for index in killed_batches.keys() & resumed_batches.keys():  # batches the killed run began after its save
        assert resumed_batches[index] == killed_batches[index]
    # ...and the fit stops at max_iterations, counting from the saved iteration.
    assert ended["iteration"] == max_iterations
    assert ended["global_step"] == global_step_after(max_iterations)

    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["grain_pl"]["iteration"] == max_iterations
    assert final["global_step"] == global_step_after(max_iterations)
    final_adam_steps = [adam_steps(optimizer["state"]) for optimizer in final["optimizer_states"]]
    if with_scaler:  # counting on from the saved steps, never from 0
        saved_steps = step_count(saved_adam_steps[0])
        assert saved_steps <= step_count(final_adam_steps[0]) <= saved_steps + RESUMED_ITERATIONS
        assert {"scale", "_growth_tracker"} <= set(final[scaler_key])
    else:
        assert final_adam_steps == [[max_iterations], [discriminator_steps_after(max_iterations)]]


FRESH_SCALER = {"scale": 2.0**16, "_growth_tracker": 0}  # torch.amp.GradScaler's initial state


def cpu_precision_plugin(precision: str) -> MixedPrecision:
    """Lightning gives 16-mixed a GradScaler on CUDA only; a CPU one (torch >= 2.3) runs the same save/restore."""
    scaler = torch.amp.GradScaler("cpu") if precision == "16-mixed" else None
    return MixedPrecision(precision, device="cpu", scaler=scaler)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"], ids=["bf16-mixed", "16-mixed-cpu-gradscaler"])
def test_a_mixed_precision_checkpoint_resumes(precision, datamodule, trainer_kwargs, tmp_path):
    """In-process and without a kill (the test above covers that), two iterations and two more: bf16 keeps no
    GradScaler state, 16-mixed must bring its GradScaler back (scale and growth tracker), here with a CPU scaler."""
    checkpoints, probe_log = tmp_path / "checkpoints", tmp_path / "probe.jsonl"

    def fit(max_iterations: int, ckpt_path: Path | None = None) -> pl.Trainer:
        stage = Stage1(network=PRESET, loss_weights=LossWeights(identity=0.0), max_iterations=max_iterations,
                       metrics_lpips=False)
        saver = ModelCheckpoint(dirpath=checkpoints, save_last=True, every_n_train_steps=1, save_top_k=0)
        trainer = pl.Trainer(callbacks=[saver, ResumeProbe(str(probe_log))], limit_val_batches=0,
                             plugins=[cpu_precision_plugin(precision), AtomicCheckpointIO()],
                             **{**trainer_kwargs, "enable_checkpointing": True})
        trainer.fit(stage, datamodule=datamodule, ckpt_path=ckpt_path)
        return trainer

    fit(max_iterations=2)
    last = checkpoints / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["grain_pl"]["iteration"] == 2 and saved["global_step"] == global_step_after(2)
    saved_scaler = {key: float(value) for key, value in saved.get("MixedPrecision", {}).items()}
    if precision == "16-mixed":  # moved away from a fresh scaler, so that restoring it is visible
        assert saved_scaler["_growth_tracker"] > 0 or saved_scaler["scale"] != FRESH_SCALER["scale"], saved_scaler
    else:
        assert not saved_scaler

    trainer = fit(max_iterations=4, ckpt_path=last)
    started = [record for record in probe_records(probe_log) if record["event"] == "train_start"][-1]
    assert started["iteration"] == 2 and started["global_step"] == saved["global_step"]
    assert started["adam_steps"] == [adam_steps(optimizer["state"]) for optimizer in saved["optimizer_states"]]
    assert started["scaler"] == (saved_scaler or None)
    assert trainer.lightning_module.iteration == 4 and trainer.global_step == global_step_after(4)
    final = torch.load(last, map_location="cpu", weights_only=True)
    assert final["grain_pl"]["iteration"] == 4
    final_steps = [step_count(adam_steps(optimizer["state"])) for optimizer in final["optimizer_states"]]
    if precision == "16-mixed":  # overflowing steps are skipped, and the D step of iteration 0 often is
        assert step_count(started["adam_steps"][0]) <= final_steps[0] <= 4 and final_steps[1] <= 1
        assert set(final["MixedPrecision"]) >= {"scale", "_growth_tracker"}
    else:
        assert final_steps == [4, 1]


# ----- atomic checkpoint files -----

def test_the_stage_confs_write_checkpoints_atomically(tmp_path, monkeypatch):
    """conf/trainer.yaml (shared by every stage) names AtomicCheckpointIO under trainer.plugins."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cli = lightning_cli(["--config", str(CONF / "trainer.yaml"), "--config", str(CONF / "stages" / "stage1.yaml"),
                         "--config", str(CONF / "overlays" / "tiny.yaml"), "--data.data_dir", str(tmp_path),
                         "--trainer.logger", "false"], run=False)
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO), (
        "add `plugins: [{class_path: grain_pl.training.checkpoint_io.AtomicCheckpointIO}]` under trainer: in "
        "conf/trainer.yaml")


def checkpoint_like(marker: str, size_mb: int = 8) -> dict[str, Any]:
    return {"marker": marker, "state_dict": {"weight": torch.full((size_mb * 2**18,), float(len(marker)))}}


@pytest.mark.slow  # a subprocess or a whole training chain: `make test-fast` skips it
def test_a_sigkill_in_the_middle_of_a_write_leaves_the_previous_checkpoint_intact(tmp_path):
    """A real SIGKILL with half of the new checkpoint on disk (kill_during_save.py kills itself there)."""
    last = tmp_path / "checkpoints" / "last.ckpt"
    completed = subprocess.run([sys.executable, str(KILL_DURING_SAVE_SCRIPT), str(last)], cwd=tmp_path,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == -signal.SIGKILL, completed.stdout + completed.stderr
    assert "killing myself" in completed.stdout, completed.stdout + completed.stderr

    survivor = torch.load(last, map_location="cpu", weights_only=True)
    assert survivor["marker"] == "first"  # the complete previous checkpoint, not a mix
    assert partial_path(last).exists()  # the half-written new one, left where a resume never looks
    assert partial_path(last).stat().st_size < last.stat().st_size * 0.75
    assert partial_path(last).suffix == PARTIAL_SUFFIX != ".ckpt"

    # The next save of that name takes the stale partial file's place and leaves nothing behind.
    AtomicCheckpointIO().save_checkpoint(checkpoint_like("third"), last)
    assert torch.load(last, map_location="cpu", weights_only=True)["marker"] == "third"
    assert sorted(path.name for path in last.parent.iterdir()) == ["last.ckpt"]


def test_a_failing_write_keeps_the_previous_checkpoint_and_cleans_up(tmp_path, monkeypatch):
    last = tmp_path / "last.ckpt"
    checkpoint_io = AtomicCheckpointIO()
    checkpoint_io.save_checkpoint(checkpoint_like("first"), last)

    real_save = torch.save

    def save_half_then_fail(obj: Any, file: Any) -> None:
        real_save(obj, file)
        file.truncate(file.tell() // 2)
        raise OSError(28, "No space left on device")  # what a full disk does in the middle of a write

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        checkpoint_io.save_checkpoint(checkpoint_like("second"), last)
    monkeypatch.undo()

    assert torch.load(last, map_location="cpu", weights_only=True)["marker"] == "first"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last.ckpt"]  # no partial file left


def test_saves_through_file_urls_and_new_folders(tmp_path):
    target = tmp_path / "new" / "folder" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint_like("first", size_mb=1), f"file://{target}")
    assert torch.load(target, map_location="cpu", weights_only=True)["marker"] == "first"
    atomic_torch_save(checkpoint_like("second", size_mb=1), target)
    assert torch.load(target, map_location="cpu", weights_only=True)["marker"] == "second"
    assert sorted(path.name for path in target.parent.iterdir()) == ["last.ckpt"]
    with pytest.raises(TypeError, match="storage_options"):
        AtomicCheckpointIO().save_checkpoint({}, target, storage_options={"anon": True})
