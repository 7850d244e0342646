"""Atomic file writes: a reader sees the old file or the complete new one, never half a file.

Every file grain_pl writes (PNGs, checkpoints, model files, converted weights) goes through `atomic_write`:
the content goes to a temporary file in the destination's folder (so the final rename stays within one file
system), is fsynced, and is then moved into place in one step; the folder is fsynced so the rename survives a
power cut. On any exception, KeyboardInterrupt included, the temporary file is removed. Without `overwrite` an
existing destination is left byte-identical and a `DestinationExistsError` is raised; where the file system has
hard links, the check and the move are one step, so two writers racing for one name never clobber each other.

    write_bytes(png, "photo.lr.png")                      # bytes
    save_torch(checkpoint, "last.ckpt", overwrite=True)   # torch.save
    save_safetensors(state, "model.safetensors", {"format": "..."})
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "DestinationExistsError",
    "atomic_write",
    "check_finite",
    "check_writable_folder",
    "fsync_directory",
    "save_safetensors",
    "save_torch",
    "write_bytes",
]

PathLike = str | os.PathLike


class DestinationExistsError(FileExistsError):
    """The destination exists and `overwrite` was not given; nothing was written."""

    def __init__(self, path: PathLike) -> None:
        super().__init__(f"{path}: already exists (pass overwrite=True / --overwrite to replace it)")
        self.path = Path(path)


def fsync_directory(folder: PathLike) -> None:
    """Make a rename inside `folder` durable (POSIX; a no-op where folders cannot be opened, e.g. Windows)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:  # some filesystems refuse fsync on folders; the rename itself is still atomic
        pass
    finally:
        os.close(descriptor)


def _unique_temporary(destination: Path) -> Path:
    """A hidden name beside `destination` that no other writer (process or thread) uses."""
    return destination.with_name(f".{destination.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def atomic_write(destination: PathLike, write: Callable[[IO[bytes]], Any], *, overwrite: bool = False,
                 temporary: PathLike | None = None) -> Path:
    """Call `write(file)` on a temporary file beside `destination`, then move the complete file into place.

    temporary: a fixed temporary name instead of a unique one (in the destination's folder); a stale file of
        that name, left by a killed writer, is overwritten. Only for a single writer per destination.
    Raises DestinationExistsError (a FileExistsError) when the destination exists and `overwrite` is False, and
    an OSError of the same errno naming `destination` (not the temporary file) when writing fails (a full disk).
    """
    destination = Path(destination)
    if destination.exists() and not overwrite:
        raise DestinationExistsError(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = _unique_temporary(destination) if temporary is None else Path(temporary)
    try:
        _write_and_move(destination, partial, write, overwrite, temporary is None)
    except DestinationExistsError:
        raise
    except OSError as error:  # a full disk's write() names no file, a read-only folder the hidden temporary one
        if error.errno is None:
            raise
        raise type(error)(error.errno, error.strerror, str(destination)) from error
    finally:  # after a replace the name is gone already; after a link it is a second name of the file
        partial.unlink(missing_ok=True)
    fsync_directory(destination.parent)
    return destination


def _write_and_move(destination: Path, partial: Path, write: Callable[[IO[bytes]], Any], overwrite: bool,
                    exclusive: bool) -> None:
    with open(partial, "xb" if exclusive else "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())  # the data is on disk before the rename makes it visible
    if overwrite:
        os.replace(partial, destination)
    else:
        try:
            os.link(partial, destination)  # fails if another writer got there first: never clobbers
        except FileExistsError:
            raise DestinationExistsError(destination) from None
        except OSError:  # a file system without hard links: check-then-rename is the best left
            if destination.exists():
                raise DestinationExistsError(destination) from None
            os.replace(partial, destination)


def check_writable_folder(folder: PathLike) -> Path:
    """Create `folder` (with its parents) and check that a file can be made in it, before a long run that writes
    there: a read-only folder or a full file system fails now, as an OSError naming `folder`, not at the end."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise type(error)(error.errno, f"cannot write there: {error.strerror or error}", str(folder)) from error
    return folder


def write_bytes(data: bytes, destination: PathLike, *, overwrite: bool = False) -> Path:
    """`destination.write_bytes(data)`, atomically (see `atomic_write`)."""
    return atomic_write(destination, lambda file: file.write(data), overwrite=overwrite)


def save_torch(obj: Any, destination: PathLike, *, overwrite: bool = False, temporary: PathLike | None = None
               ) -> Path:
    """`torch.save(obj, destination)`, atomically (see `atomic_write`)."""
    return atomic_write(destination, lambda file: torch.save(obj, file), overwrite=overwrite, temporary=temporary)


def check_finite(state: Mapping[str, Any], destination: PathLike) -> None:
    """Raise a ValueError naming `destination` and the first floating-point tensor of `state` (nested dicts
    searched) that holds NaN or infinite values: a model exported from a diverged run would decode to garbage."""
    for key, value in state.items():
        if isinstance(value, Mapping):
            check_finite({f"{key}.{inner}": item for inner, item in value.items()}, destination)
        elif isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise ValueError(f"{destination}: refusing to write a model whose tensor {key} holds NaN or infinite "
                             "values (a diverged training run?); nothing was written")


def save_safetensors(state: Mapping[str, torch.Tensor], destination: PathLike,
                     metadata: Mapping[str, str] | None = None, *, overwrite: bool = False) -> Path:
    """Tensors (moved to the CPU, made contiguous) as a safetensors file with `metadata` in its header,
    atomically (see `atomic_write`). Refuses non-finite tensors (`check_finite`): every model file goes through
    here (`save_grain`, `grain convert`, a stage's export_path)."""
    from safetensors.torch import save

    check_finite(state, destination)
    tensors = {key: value.detach().contiguous().cpu() for key, value in state.items()}
    data = save(tensors, metadata=dict(metadata or {}))
    return write_bytes(data, destination, overwrite=overwrite)
