"""Dies by SIGKILL in the middle of writing a checkpoint, for tests/stages/test_resume.py.

    python tests/stages/kill_during_save.py CHECKPOINT

Saves a complete checkpoint (marker "first") to CHECKPOINT with AtomicCheckpointIO, then starts saving a second
one (marker "second") and, once half of its bytes are on disk, sends itself SIGKILL: no exception handler, no
finally and no atexit runs, exactly as when a job scheduler or the OOM killer ends a training process.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

from grain_pl.training.checkpoint_io import AtomicCheckpointIO

CHECKPOINT_MB = 8


def checkpoint_like(marker: str) -> dict[str, Any]:
    return {"marker": marker, "state_dict": {"weight": torch.full((CHECKPOINT_MB * 2**18,), float(len(marker)))}}


def main(path: Path) -> None:
    writer = AtomicCheckpointIO()
    writer.save_checkpoint(checkpoint_like("first"), path)
    real_save = torch.save

    def save_half_then_die(obj: Any, file: Any) -> None:
        buffer = io.BytesIO()
        real_save(obj, buffer)
        data = buffer.getvalue()
        file.write(data[: len(data) // 2])
        file.flush()
        os.fsync(file.fileno())
        print(f"wrote {len(data) // 2} of {len(data)} bytes, killing myself", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    torch.save = save_half_then_die  # patched for this process: grain_pl.io.files looks it up at each call
    writer.save_checkpoint(checkpoint_like("second"), path)
    print("still alive after SIGKILL?", flush=True)
    sys.exit(1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
