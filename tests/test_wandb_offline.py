"""A real stage fit with GrainWandbLogger (offline) and LogImageGrid: the offline run folder holds the sample
images and the metrics, read back from the run's own record log (`run-<id>.wandb`), the file `wandb sync`
uploads.

wandb 0.31 has no Python reader for that log any more (its writer is the Go `wandb-core`), so `wandb_records`
below reads it: LevelDB's log format (32 KiB blocks of chunks, each with a 7-byte header: CRC-32 of the type
byte and the data, little-endian uint16 length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4) after W&B's 7-byte file
header (":W&B", uint16 0xBEE1, version 0); every record is a `wandb_internal_pb2.Record` protobuf.
"""

from __future__ import annotations

import json
import math
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from PIL import Image
from wandb.proto import wandb_internal_pb2

from grain_pl.data import GrainDataModule
from grain_pl.losses import LossWeights
from grain_pl.stages import Stage1
from grain_pl.training import LogImageGrid
from grain_pl.training.loggers import GrainWandbLogger

WANDB_FILE_HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)
LOG_BLOCK_SIZE = 32 * 1024
CHUNK_HEADER = struct.Struct("<IHB")  # crc32, length, type
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4
ITERATIONS = 4  # 3 training batches an epoch (6 images, batch 2): a second epoch starts too


def wandb_records(path: Path) -> list[wandb_internal_pb2.Record]:
    """Every record of a W&B transaction log, in order; a corrupt chunk is an error."""
    data = path.read_bytes()
    assert data[: len(WANDB_FILE_HEADER)] == WANDB_FILE_HEADER, f"{path}: not a W&B log (header {data[:7]!r})"
    records, pending, position = [], b"", len(WANDB_FILE_HEADER)
    while position + CHUNK_HEADER.size <= len(data):
        left_in_block = LOG_BLOCK_SIZE - position % LOG_BLOCK_SIZE
        if left_in_block < CHUNK_HEADER.size:  # the block's zero-filled tail
            position += left_in_block
            continue
        checksum, length, kind = CHUNK_HEADER.unpack_from(data, position)
        start = position + CHUNK_HEADER.size
        if start + length > len(data) or (kind == 0 and length == 0):  # still being written / never written
            break
        chunk = data[start:start + length]
        position = start + length
        assert zlib.crc32(chunk, zlib.crc32(bytes([kind]))) == checksum, f"{path}: bad checksum at {start}"
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def records_of_finished_run(path: Path, timeout_s: float = 60.0) -> list[wandb_internal_pb2.Record]:
    """The log's records once its final "exit" record is on disk: wandb-core may still be writing the tail
    after `run.finish()` returned."""
    deadline = time.monotonic() + timeout_s
    while True:
        records = wandb_records(path)
        if records and records[-1].WhichOneof("record_type") == "exit":
            return records
        assert time.monotonic() < deadline, f"{path}: no exit record after {timeout_s} s"
        time.sleep(0.2)


def flat_items(items) -> dict[str, Any]:
    """History or summary items as {"a/b": value}; W&B splits logged "a/b" keys into nested_key parts."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in items}


def test_the_offline_run_holds_the_sample_images_and_the_metrics(tmp_path, image_dir, isolated_wandb):
    datamodule = GrainDataModule(data_dir=str(image_dir), image_size=32, split="folder", test_fraction=0.25,
                                 batch_size=2, num_workers=0)
    stage = Stage1(network="tiny-32-lr8", loss_weights=LossWeights(identity=0.0), max_iterations=ITERATIONS)
    logger = GrainWandbLogger(name="offline-check", save_dir=str(tmp_path / "runs"))
    grids = LogImageGrid(every_n_steps=1, max_images=2)
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=logger, callbacks=[grids], val_check_interval=2,
                         limit_val_batches=1, num_sanity_val_steps=0, log_every_n_steps=1,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(stage, datamodule=datamodule)
    run = logger.experiment
    assert run.offline
    run_dir = Path(run.dir).parent  # run.dir is <run folder>/files
    run.finish()  # flushes and closes the log; Lightning leaves the run open

    assert run_dir.parent == tmp_path / "runs" / "wandb" and run_dir.name.startswith("offline-run-")
    records = records_of_finished_run(next(run_dir.glob("run-*.wandb")))
    kinds = [record.WhichOneof("record_type") for record in records]
    assert records[-1].exit.exit_code == 0
    assert records[kinds.index("run")].run.display_name == "offline-check"
    history = [flat_items(record.history.item) for record in records if record.HasField("history")]

    # Metrics: every training iteration (log_every_n_steps=1), and each validation run's losses and metrics.
    train_rows = [row for row in history if "train/loss" in row]
    assert len(train_rows) == ITERATIONS
    assert all(math.isfinite(row["train/loss"]) and "train/pixel" in row for row in train_rows)
    assert sum("train/d_loss" in row for row in history) >= 1
    val_rows = [row for row in history if "val/psnr" in row]
    assert len(val_rows) == ITERATIONS // 2  # val_check_interval=2
    for row in val_rows:
        assert {"val/psnr", "val/ssim", "val/lpips", "val/pixel"} <= set(row)
        assert all(math.isfinite(row[key]) for key in ("val/psnr", "val/ssim", "val/lpips"))
    summary: dict[str, Any] = {}
    for record in records:
        if record.HasField("summary"):
            summary.update(flat_items(record.summary.update))
    assert summary["val/psnr"] == val_rows[-1]["val/psnr"] and summary["train/loss"] == train_rows[-1]["train/loss"]

    # Images: each grid LogImageGrid made is a PNG of the run, identical to the callback's own copy.
    local_grids = {path.name: path for path in grids.saved_paths}
    for stage_name in ("train", "val"):
        image_rows = [row for row in history if f"{stage_name}/samples/filenames" in row]
        own_copies = sorted(name for name in local_grids if name.startswith(f"{stage_name}_"))
        assert len(image_rows) == len(own_copies) >= 1, (stage_name, image_rows, own_copies)
        for row, own_copy in zip(image_rows, own_copies):
            assert row[f"{stage_name}/samples/_type"] == "images/separated"
            assert row[f"{stage_name}/samples/captions"] == ["hr | lr | y_inv"]
            assert row["trainer/global_step"] == int(own_copy.split("step")[1].split(".")[0])
            (filename,) = row[f"{stage_name}/samples/filenames"]
            assert filename.startswith(f"media/images/{stage_name}/") and filename.endswith(".png")
            with Image.open(run_dir / "files" / filename) as logged, Image.open(local_grids[own_copy]) as saved:
                logged_pixels = np.asarray(logged.convert("RGB"), dtype=np.int16)
                saved_pixels = np.asarray(saved.convert("RGB"), dtype=np.int16)
            assert logged_pixels.shape == saved_pixels.shape
            assert logged_pixels.shape[:2] == (row[f"{stage_name}/samples/height"], row[f"{stage_name}/samples/width"])
            assert np.abs(logged_pixels - saved_pixels).max() <= 1  # rounding: round() vs torchvision's +0.5
    files = {record.files.files[0].path for record in records if record.HasField("files")}
    assert {row[f"{name}/samples/filenames"][0] for row in history for name in ("train", "val")
            if f"{name}/samples/filenames" in row} <= files
