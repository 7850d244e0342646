"""Real 2-process DDP fits (CPU, gloo) of the GAN stages (GRAIN's and the prior's) with
strategy="ddp_find_unused_parameters_true": the ranks train on different images and end with the same weights,
the discriminator / R1 schedule is the same on every rank, plain strategy="ddp" is refused up front.

Each fit runs `ddp_fit_script.py` in a subprocess (its own session, killed as a group on timeout), so pytest
itself never forks or spawns ranks, and a hang fails the test instead of blocking the suite.

SyncBatchNorm (the stage-1 patch discriminator's BatchNorm) cannot be tested here: torch's DDP refuses
SyncBatchNorm on CPU modules ("SyncBatchNorm layers only work with GPU modules"); the GPU variant below needs two
GPUs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.plugins import TorchSyncBatchNorm

from grain_pl.losses import LossWeights
from grain_pl.stages import Stage1

SCRIPT = Path(__file__).with_name("ddp_fit_script.py")
FIT_TIMEOUT_SECONDS = 240  # a few tiny iterations take ~15 s; only a hang gets near this
# Launcher / cluster variables from the calling environment would make Lightning join or plan another job.
FOREIGN_ENVIRONMENT_PREFIXES = ("SLURM_", "TORCHELASTIC_", "LSB_", "OMPI_", "PMI_")
FOREIGN_ENVIRONMENT_NAMES = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE",
                             "MASTER_ADDR", "MASTER_PORT", "PL_GLOBAL_SEED", "PL_TRAINER_GPUS")

# iteration:            0             1        2                    3
# optimizer steps:      D + G         G        D + R1 + G           G        (d_every=2, r1_every=2, R1 on)
SCHEDULE_ARGUMENTS = ["--max-iterations", "4", "--d-every", "2", "--r1-every", "2", "--r1-gamma", "10"]
EXPECTED_OPTIMIZER_STEPS = [2, 3, 6, 7]  # cumulative after each iteration


def clean_environment() -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items()
                   if name not in FOREIGN_ENVIRONMENT_NAMES and not name.startswith(FOREIGN_ENVIRONMENT_PREFIXES)}
    environment["OMP_NUM_THREADS"] = "1"  # two ranks share few cores
    return environment


def run_fit_script(arguments: list[str], out_dir: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPT), "--out-dir", str(out_dir), *arguments]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=clean_environment(), start_new_session=True)
    try:
        output, _ = process.communicate(timeout=FIT_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # rank 0 and the ranks Lightning started from it
        output, _ = process.communicate()
        pytest.fail(f"the DDP fit hung (> {FIT_TIMEOUT_SECONDS} s): {' '.join(command)}\n{output[-4000:]}")
    return subprocess.CompletedProcess(command, process.returncode, output)


def load_ranks(out_dir: Path) -> tuple[dict, dict]:
    return (torch.load(out_dir / "rank0.pt", weights_only=True), torch.load(out_dir / "rank1.pt", weights_only=True))


def changed_names(result: dict) -> set[str]:
    return {name for name, value in result["final"].items() if not torch.equal(value, result["initial"][name])}


@pytest.mark.slow  # a subprocess or a whole training chain: `make test-fast` skips it
@pytest.mark.parametrize("stage_name", ["stage1", "final"])
def test_ddp_fit_keeps_both_ranks_identical(stage_name, image_dir, prior_file, tmp_path):
    arguments = ["--stage", stage_name, "--image-dir", str(image_dir), *SCHEDULE_ARGUMENTS]
    if stage_name == "final":
        # also DDP with activation checkpointing (non-reentrant: DDP sees the recomputed graph)
        arguments += ["--prior", str(prior_file), "--checkpointing"]
    completed = run_fit_script(arguments, tmp_path)
    assert completed.returncode == 0, completed.stdout[-6000:]
    rank0, rank1 = load_ranks(tmp_path)

    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["process_group_backend"] == "gloo"
    # DistributedSampler: each rank trained on its own images, so equal weights can only come from gradient sync
    assert rank0["fingerprints"] != rank1["fingerprints"]
    # The D / R1 schedule hangs on the shared iteration counter: same on both ranks (a rank that skipped a
    # D step alone would leave the other waiting in its all-reduce), with iterations that skip D and R1.
    assert rank0["optimizer_steps"] == rank1["optimizer_steps"] == EXPECTED_OPTIMIZER_STEPS
    assert rank0["iteration"] == rank1["iteration"] == 4
    assert rank0["discriminator_steps"] == rank1["discriminator_steps"] == 2

    assert rank0["final"].keys() == rank1["final"].keys()
    different = [name for name in rank0["final"] if not torch.equal(rank0["final"][name], rank1["final"][name])]
    assert not different, f"parameters differ between the ranks: {different[:10]}"

    changed = changed_names(rank0)
    for prefix in ("discriminator.", *(f"grain.{part}." for part in ("encoder", "decoder"))):
        assert any(name.startswith(prefix) for name in changed), prefix
    if stage_name == "final":
        for prefix in ("grain.latent_codes.", "grain.fusion."):
            assert any(name.startswith(prefix) for name in changed), prefix
        # the StyleGAN2 discriminator has no BatchNorm: its buffers stay in step too
        assert all(torch.equal(value, rank1["discriminator_buffers"][name])
                   for name, value in rank0["discriminator_buffers"].items())
    else:
        assert changed == set(rank0["final"])  # stage 1: every trained tensor moved


@pytest.mark.slow  # a subprocess or a whole training chain: `make test-fast` skips it
def test_prior_ddp_fit_keeps_both_ranks_identical(image_dir, tmp_path):
    completed = run_fit_script(["--stage", "prior", "--image-dir", str(image_dir), "--max-iterations", "4",
                                "--r1-every", "2"], tmp_path)
    assert completed.returncode == 0, completed.stdout[-6000:]
    rank0, rank1 = load_ranks(tmp_path)
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["fingerprints"] != rank1["fingerprints"]
    # rosinality's R1 schedule (iterations 0 and 2) on both ranks: D + R1 + G, D + G, D + R1 + G, D + G
    assert rank0["optimizer_steps"] == rank1["optimizer_steps"] == [3, 5, 8, 10]
    assert rank0["iteration"] == rank1["iteration"] == 4
    different = [name for name in rank0["final"] if not torch.equal(rank0["final"][name], rank1["final"][name])]
    assert not different, f"parameters differ between the ranks: {different[:10]}"
    changed = changed_names(rank0)
    assert any(name.startswith("generator.") for name in changed)
    assert any(name.startswith("discriminator.") for name in changed)


@pytest.mark.slow  # a subprocess or a whole training chain: `make test-fast` skips it
@pytest.mark.parametrize(("stage_name", "class_name"), [("stage1", "Stage1"), ("prior", "PriorStage")])
def test_plain_ddp_is_refused_at_fit_start_on_every_rank(stage_name, class_name, image_dir, tmp_path):
    completed = run_fit_script(["--stage", stage_name, "--image-dir", str(image_dir), "--strategy", "ddp"], tmp_path)
    assert completed.returncode != 0
    message = f"{class_name} under DDP needs strategy='ddp_find_unused_parameters_true'"
    assert message in completed.stdout, completed.stdout[-6000:]
    assert not list(tmp_path.glob("rank*.pt"))  # nothing trained


def test_sync_batchnorm_converts_only_the_patch_discriminator():
    """What `Trainer(sync_batchnorm=True)` does to stage 1 (Lightning applies TorchSyncBatchNorm under DDP)."""
    stage = Stage1(network="tiny-32-lr8", loss_weights=LossWeights(identity=0.0), metrics_lpips=False)
    batchnorm_layers = sum(isinstance(module, torch.nn.BatchNorm2d) for module in stage.discriminator.modules())
    assert batchnorm_layers == 7
    converted = TorchSyncBatchNorm().apply(stage)
    synced = [name for name, module in converted.named_modules() if isinstance(module, torch.nn.SyncBatchNorm)]
    assert len(synced) == batchnorm_layers
    assert all(name.startswith("discriminator.") for name in synced)
    reverted = TorchSyncBatchNorm().revert(converted)  # what Lightning does at teardown: checkpoints keep BatchNorm2d
    assert not any(isinstance(module, torch.nn.SyncBatchNorm) for module in reverted.modules())
    assert set(reverted.state_dict()) == set(Stage1(network="tiny-32-lr8", loss_weights=LossWeights(identity=0.0),
                                                    metrics_lpips=False).state_dict())


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="SyncBatchNorm under DDP needs two GPUs")
def test_stage1_ddp_with_sync_batchnorm_on_gpus(image_dir, tmp_path):
    arguments = ["--stage", "stage1", "--image-dir", str(image_dir), "--accelerator", "gpu", "--sync-batchnorm",
                 "--max-iterations", "4", "--d-every", "2"]  # stage 1's own recipe: no R1
    completed = run_fit_script(arguments, tmp_path)
    assert completed.returncode == 0, completed.stdout[-6000:]
    rank0, rank1 = load_ranks(tmp_path)
    assert rank0["sync_batchnorm_layers"] == 7
    assert rank0["fingerprints"] != rank1["fingerprints"]
    for name, value in rank0["final"].items():
        assert torch.equal(value, rank1["final"][name]), name
    # synchronized batch statistics: the running statistics agree too
    for name, value in rank0["discriminator_buffers"].items():
        torch.testing.assert_close(value, rank1["discriminator_buffers"][name], rtol=1e-5, atol=1e-6)
