"""Checkpoint I/O shared by every weight format: safe reading, prefix handling, strict loading.

Networks never read files; everything that touches a foreign file or foreign key names lives in
`grain_pl.weights`. Every error here names the file it came from and what was expected.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from grain_pl.io.files import save_safetensors  # noqa: F401 - re-exported: every weight format writes through it

PathLike = str | os.PathLike

# How many offending keys an error message lists before it says "... and N more".
_MAX_LISTED = 12


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, or keys/shapes that do not match."""


def read_checkpoint(path: PathLike, *, allow: Iterable[type] = ()) -> object:
    """`torch.load` a file on the CPU with `weights_only=True`.

    `allow` lists the few non-tensor classes a format needs (rosinality files carry an
    `argparse.Namespace`); nothing else may be unpickled.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.suffix == ".safetensors":
        return read_safetensors_checkpoint(path)
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = blocked_global(str(err))
        if blocked is not None:
            raise CheckpointError(
                f"{path}: refused: its pickle asks for {blocked}, which a file of weights never needs (a tampered "
                "or foreign file); grain_pl unpickles only tensors and plain containers") from err
        raise _unreadable(path, err) from err
    except Exception as err:  # torch.load raises many types for bad bytes (IndexError, EOFError, ...)
        raise _unreadable(path, err) from err


def blocked_global(message: str) -> str | None:
    """The import or call a `weights_only` load refused (e.g. "posix.system"), from torch's message, or None."""
    match = re.search(r"GLOBAL\s+([\w.]+)", message)
    return match.group(1) if match else None


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    message = str(err).strip()
    # torch's weights_only message starts by suggesting weights_only=False (which would run the file's code):
    # show only what its unpickler found
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", message)
    first_line = detail.group(1) if detail else message.splitlines()[0] if message else type(err).__name__
    return CheckpointError(
        f"{path}: cannot read it as a PyTorch checkpoint (truncated, corrupt or not a torch.save file): "
        f"{first_line}")


def require_mapping(obj: object, source: PathLike, what: str) -> Mapping:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{source}: expected {what} (a dict), found {type(obj).__name__}")
    return obj


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys that start with `prefix`, with the prefix removed; other keys are dropped."""
    return {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}


def strip_module_prefix(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the `module.` that DataParallel/DDP wrappers put in front of every key."""
    if state and all(key.startswith("module.") for key in state):
        return strip_prefix(state, "module.")
    return dict(state)


def add_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + key: value for key, value in state.items()}


def _listing(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    if len(keys) > _MAX_LISTED:
        shown += f", ... and {len(keys) - _MAX_LISTED} more"
    return shown


def check_state_dict(
    expected: Mapping[str, torch.Tensor],
    given: Mapping[str, torch.Tensor],
    *,
    source: PathLike,
    what: str,
) -> None:
    """Raise a CheckpointError listing missing, unexpected and mis-shaped keys (all of them at once)."""
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    mismatched = [
        f"{key}: expected {tuple(expected[key].shape)}, got {tuple(given[key].shape)}"
        for key in sorted(set(expected) & set(given))
        if tuple(expected[key].shape) != tuple(getattr(given[key], "shape", ()))
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_listing(unexpected)}")
    if mismatched:
        shown = "; ".join(mismatched[:_MAX_LISTED])
        if len(mismatched) > _MAX_LISTED:
            shown += f"; ... and {len(mismatched) - _MAX_LISTED} more"
        problems.append(f"{len(mismatched)} shape mismatch(es): {shown}")
    if problems:
        raise CheckpointError(f"{source}: does not fit {what}: " + " | ".join(problems))


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], *, source: PathLike, what: str) -> None:
    """`module.load_state_dict(state, strict=True)`, but every mismatch is reported with the file's name."""
    check_state_dict(module.state_dict(), state, source=source, what=what)
    module.load_state_dict(state, strict=True)


# safetensors holds one flat dict; checkpoints such as rosinality's ({"g_ema": {...}, "d": {...}, "latent_avg": t})
# are flattened to "g_ema.<key>" and the group names kept in this metadata entry, so reading restores the nesting.
NESTED_GROUPS_KEY = "grain_pl.nested_groups"


def flatten_checkpoint(checkpoint: Mapping[str, object]) -> tuple[dict[str, torch.Tensor], str]:
    flat, groups = {}, []
    for name, value in checkpoint.items():
        if isinstance(value, Mapping):
            groups.append(name)
            flat.update({f"{name}.{key}": tensor for key, tensor in value.items() if torch.is_tensor(tensor)})
        elif torch.is_tensor(value):
            flat[name] = value
    return flat, ",".join(groups)


def read_safetensors_metadata(path: PathLike, unreadable: str = "cannot read its safetensors header"
                              ) -> dict[str, str]:
    """The text metadata in a safetensors file's header; CheckpointError "<path>: <unreadable>: <why>" if none."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as err:  # noqa: BLE001 - any failure means the header is unreadable
        raise CheckpointError(f"{path}: {unreadable}: {err}") from err


def read_safetensors_checkpoint(path: PathLike) -> dict[str, object]:
    """A safetensors file as a checkpoint dict, with groups written by `flatten_checkpoint` nested again."""
    tensors = load_safetensors(path)
    metadata = read_safetensors_metadata(path)
    groups = [group for group in metadata.get(NESTED_GROUPS_KEY, "").split(",") if group]
    checkpoint: dict[str, object] = {group: {} for group in groups}
    for key, tensor in tensors.items():
        group = key.split(".", 1)[0]
        if group in checkpoint and "." in key:
            checkpoint[group][key.split(".", 1)[1]] = tensor
        else:
            checkpoint[key] = tensor
    return checkpoint


def load_safetensors(path: PathLike) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such safetensors file")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: cannot read it as safetensors: {err}") from err
