"""Atomic file writes (grain_pl.io.files): all or nothing, never clobbering, no leftovers, durable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from grain_pl.io import files
from grain_pl.io.files import DestinationExistsError, atomic_write, save_torch, write_bytes
from grain_pl.weights.io import load_safetensors, save_safetensors


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_writes_the_bytes_into_new_folders(tmp_path):
    target = tmp_path / "new" / "folder" / "file.bin"
    assert write_bytes(b"content", target) == target
    assert target.read_bytes() == b"content"
    assert names(target.parent) == ["file.bin"]


def test_an_existing_file_is_refused_byte_identical_unless_overwrite(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"precious")
    with pytest.raises(DestinationExistsError, match=r"file\.bin: already exists \(pass overwrite=True"):
        write_bytes(b"new", target)
    assert target.read_bytes() == b"precious" and names(tmp_path) == ["file.bin"]
    write_bytes(b"new", target, overwrite=True)
    assert target.read_bytes() == b"new" and names(tmp_path) == ["file.bin"]


def test_a_file_that_appears_during_the_write_is_not_clobbered(tmp_path):
    target = tmp_path / "file.bin"

    def write_while_another_writer_finishes_first(file) -> None:
        file.write(b"mine")
        target.write_bytes(b"theirs")  # another process, between our check and our move

    with pytest.raises(DestinationExistsError):
        atomic_write(target, write_while_another_writer_finishes_first)
    assert target.read_bytes() == b"theirs" and names(tmp_path) == ["file.bin"]


def test_without_hard_links_it_still_refuses_and_writes(tmp_path, monkeypatch):
    def no_links(source, destination):
        raise PermissionError(1, "Operation not permitted")  # what FAT or some network shares answer

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "file.bin"
    write_bytes(b"first", target)
    assert target.read_bytes() == b"first"
    with pytest.raises(DestinationExistsError):
        atomic_write(target, lambda file: (file.write(b"second"), target.touch()))
    assert names(tmp_path) == ["file.bin"]


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, OSError])
def test_an_interrupted_write_keeps_the_old_file_and_leaves_nothing(tmp_path, interruption):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")

    def write_half_then_stop(file) -> None:
        file.write(b"ne")
        raise interruption()

    with pytest.raises(interruption):
        atomic_write(target, write_half_then_stop, overwrite=True)
    assert target.read_bytes() == b"old" and names(tmp_path) == ["file.bin"]


def test_the_file_and_its_folder_are_fsynced(tmp_path, monkeypatch):
    synced: list[int] = []  # inode numbers
    real_fsync = os.fsync

    def recording_fsync(descriptor: int) -> None:
        synced.append(os.fstat(descriptor).st_ino)
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    target = tmp_path / "file.bin"
    write_bytes(b"content", target)
    assert synced == [target.stat().st_ino, tmp_path.stat().st_ino]  # the data before the move, then the rename


def test_a_fixed_temporary_name_replaces_a_stale_one(tmp_path):
    target, stale = tmp_path / "last.ckpt", tmp_path / "last.ckpt.partial"
    stale.write_bytes(b"half of a killed write")
    save_torch({"marker": 1}, target, overwrite=True, temporary=stale)
    assert torch.load(target, weights_only=True) == {"marker": 1}
    assert names(tmp_path) == ["last.ckpt"]


def test_torch_save_goes_through_the_temporary_file(tmp_path, monkeypatch):
    written_to: list[str] = []
    real_save = torch.save

    def recording_save(obj, file) -> None:
        written_to.append(file.name)
        real_save(obj, file)

    monkeypatch.setattr(torch, "save", recording_save)
    target = save_torch({"a": torch.arange(3)}, tmp_path / "file.pt")
    assert torch.equal(torch.load(target, weights_only=True)["a"], torch.arange(3))
    assert len(written_to) == 1 and Path(written_to[0]).name.startswith(".file.pt.")


# ----- safetensors: grain_pl.weights.io.save_safetensors, every weight format's writer -----

def test_safetensors_round_trip_with_metadata(tmp_path):
    state = {"weight": torch.randn(4, 3).t(), "bias": torch.zeros(3, requires_grad=True)}  # non-contiguous, grad
    path = save_safetensors(state, tmp_path / "model.safetensors", {"format": "test"})
    loaded = load_safetensors(path)
    assert torch.equal(loaded["weight"], state["weight"]) and torch.equal(loaded["bias"], state["bias"].detach())
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata() == {"format": "test"}


def test_safetensors_never_touches_a_file_named_like_a_temporary(tmp_path):
    """save_safetensors used to write through the fixed name `<file>.tmp` and rename it away."""
    neighbour = tmp_path / "model.safetensors.tmp"
    neighbour.write_bytes(b"someone else's file")
    save_safetensors({"weight": torch.ones(2)}, tmp_path / "model.safetensors")
    assert neighbour.read_bytes() == b"someone else's file"


def test_safetensors_interrupted_before_the_move_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    """save_safetensors used to leave `<file>.tmp` behind after a failure."""
    path = save_safetensors({"weight": torch.ones(2)}, tmp_path / "model.safetensors")
    before = path.read_bytes()

    def interrupted_replace(source, destination):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted_replace)
    with pytest.raises(KeyboardInterrupt):
        save_safetensors({"weight": torch.zeros(2)}, path, overwrite=True)
    monkeypatch.undo()
    assert path.read_bytes() == before and names(tmp_path) == ["model.safetensors"]


def test_weights_io_writes_through_the_one_implementation():
    assert save_safetensors is files.save_safetensors
