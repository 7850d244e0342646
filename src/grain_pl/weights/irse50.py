"""Read pSp's / TreB1eN's `model_ir_se50.pth` into `grain_pl.networks.irse.IRSE50`.

The file is a flat state dict whose key names already match our module tree (docs/method.md §5.4), so
conversion only has to undo wrappers and fill the BatchNorm counters older PyTorch saves lack.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from grain_pl.networks.irse import IRSE50
from grain_pl.weights.io import (
    CheckpointError,
    PathLike,
    load_strict,
    read_checkpoint,
    require_mapping,
    strip_module_prefix,
)

__all__ = ["CheckpointError", "convert_irse50", "load_irse50"]

_RUNNING_MEAN = ".running_mean"
_BATCH_COUNTER = ".num_batches_tracked"


def convert_irse50(state: Mapping) -> dict[str, torch.Tensor]:
    """Turn a loaded IR-SE50 checkpoint into a state dict for `IRSE50()`. Pure: `state` is not modified.

    Accepts the flat pSp file, a `{"state_dict": ...}` wrapper and a DataParallel `module.` prefix.
    Every BatchNorm that has running statistics but no `num_batches_tracked` gets `tensor(0)`:
    PyTorch < 0.4.1 did not save that counter, and it is never read in eval mode (momentum is set),
    so zero is harmless. Key validation is left to the strict load, which names the file.
    """
    inner = state.get("state_dict") if "state_dict" in state else state
    if not isinstance(inner, Mapping):
        raise CheckpointError(f"IR-SE50 checkpoint: 'state_dict' is a {type(inner).__name__}, not a dict")
    converted = strip_module_prefix(inner)
    for key in list(converted):
        if key.endswith(_RUNNING_MEAN):
            counter_key = key[: -len(_RUNNING_MEAN)] + _BATCH_COUNTER
            converted.setdefault(counter_key, torch.tensor(0, dtype=torch.long))
    return converted


def load_irse50(path: PathLike) -> IRSE50:
    """Build the frozen identity network from `model_ir_se50.pth`: eval mode, no gradients.

    Raises CheckpointError naming the file (and the offending keys) if it is unreadable or any key
    is missing, unexpected or mis-shaped.
    """
    raw = require_mapping(read_checkpoint(path), path, "an IR-SE50 state dict")
    try:
        state = convert_irse50(raw)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from err
    # Build on the meta device and materialise uninitialised storage: the strict load below
    # overwrites every parameter and buffer, so random initialisation of 44M weights would be wasted.
    with torch.device("meta"):
        network = IRSE50()
    network.to_empty(device="cpu")
    load_strict(network, state, source=path, what="IR-SE50 (pSp model_ir_se50.pth layout)")
    network.eval()
    network.requires_grad_(False)
    return network
