"""AtomicCheckpointIO: checkpoint files that a kill, a crash or a power cut never leaves half-written.

Lightning's own `TorchCheckpointIO` writes through an fsspec transaction, which on a local disk serializes
the checkpoint into memory, writes it to a file made by `tempfile.mkstemp()` (that is, in $TMPDIR, not next to
the checkpoint) and then `shutil.move`s it over the target. When $TMPDIR is on another filesystem than the
run folder (a tmpfs /tmp, a node-local disk next to a network share: the usual case on clusters) the move is
a *copy into the target file*, so a kill during it truncates `last.ckpt`, the one copy a resume needs. It also
never fsyncs, leaves a checkpoint-sized orphan in $TMPDIR at every kill and keeps a second copy in memory.

This plugin writes `<name>.partial` beside the target, fsyncs it, `os.replace`s it over the target (atomic
within one filesystem) and fsyncs the folder (`grain_pl.io.files.atomic_write`): a reader sees the old file or
the new one, never a mix. A full disk is an OSError naming the checkpoint (`grain fit` shows it as one line). A kill
leaves at most one stale `<name>.partial`, which the next save of that name overwrites; its suffix is not
`.ckpt`, so Lightning never takes it for a checkpoint. Remote paths (s3://, gs://, ...) keep Lightning's
behaviour: an object upload is already all-or-nothing.

    trainer:
      plugins:
        - class_path: grain_pl.training.checkpoint_io.AtomicCheckpointIO
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fsspec.core import url_to_fs
from fsspec.implementations.local import LocalFileSystem
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.plugins.io import TorchCheckpointIO

from grain_pl.io.files import fsync_directory, save_torch

__all__ = ["PARTIAL_SUFFIX", "AtomicCheckpointIO", "atomic_torch_save", "fsync_directory", "partial_path"]

PARTIAL_SUFFIX = ".partial"


def partial_path(path: str | os.PathLike) -> Path:
    """Where a checkpoint is written before it replaces `path`: the same folder, so the rename is atomic."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """`torch.save(obj, path)`, but `path` holds either its previous content or the complete new one."""
    save_torch(obj, path, overwrite=True, temporary=partial_path(path))


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO whose local saves are atomic (see the module docstring). Loading and removing are
    Lightning's own."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        filesystem, local_path = url_to_fs(str(path))  # also strips a file:// prefix
        if not isinstance(filesystem, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)
            return
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint takes no storage_options (got {storage_options!r})")
        try:
            atomic_torch_save(checkpoint, local_path)
        except OSError as err:  # a full disk, a lost mount: the temporary file is gone, the target untouched
            raise OSError(f"{local_path}: cannot write this checkpoint: {err.strerror or err} (the file it would "
                          "have replaced, if any, is intact)") from err
