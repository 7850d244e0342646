"""The official GRAIN module files (cszzx/GRAIN) -> grain_pl's GRAIN keys.

- `invRRDB_model.pt`: encoder + decoder, keys `enc.*` / `dec.*` (ESRGAN names: `RRDB_trunk16.0.RDB1.conv1`).
- `codeStyleGAN_model.pt`: the latent-code bank under `encoder.styles.{k}.*` (a `decoder.*` copy of the
  generator may be present; like the official loader we ignore it, the prior comes from the StyleGAN2 file).
- `Fusion_model.pt`: unprefixed fusion keys (`se1.fc1.weight`, `conv1.0.weight`, `out.8.bias`).

Each file may wrap its tensors in `state_dict` (stages 1-3), `state_dict1/2/3` (stage-4 saves) or nothing,
and keys may carry DataParallel's `module.` prefix. The converters are pure `dict -> dict` functions;
`load_official_grain` applies them to a GRAIN strictly, part by part.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from grain_pl.weights.io import (
    CheckpointError,
    PathLike,
    check_state_dict,
    read_checkpoint,
    require_mapping,
    strip_module_prefix,
)

_WRAPPERS = ("state_dict", "state_dict1", "state_dict2", "state_dict3")

# (official pattern, grain_pl replacement), applied in order to each key.
_BLOCK_RULES = [(r"\.RDB(\d)\.", r".rdb\1.")]
_INVRRDB_RULES = [
    (r"^enc\.body\.(\d+)\.0\.", r"encoder.down.\1.0."),
    (r"^enc\.RRDB_trunk\.", "encoder.trunk."),
    (r"^enc\.out\.", "encoder.to_lr."),
    (r"^enc\.", "encoder."),
    (r"^dec\.RRDB_trunk(\d+)\.", r"decoder.scales.\1.blocks."),
    (r"^dec\.trunk_conv(\d+)\.", r"decoder.scales.\1.trunk_conv."),
    (r"^dec\.out\.", "decoder.to_hr."),
    (r"^dec\.", "decoder."),
    *_BLOCK_RULES,
]
_FEA2CODE_RULES = [
    (r"^styles\.(\d+)\.conv_first\.0\.", r"latent_codes.blocks.\1.downsample.0."),
    (r"^styles\.(\d+)\.convs\.(\d+)\.", lambda m: f"latent_codes.blocks.{m[1]}.downsample.{int(m[2]) + 2}."),
    (r"^styles\.(\d+)\.convs2\.", r"latent_codes.blocks.\1.even_convs."),
    (r"^styles\.(\d+)\.linear2\.", r"latent_codes.blocks.\1.even_linear."),
    (r"^styles\.(\d+)\.convs1\.", r"latent_codes.blocks.\1.odd_convs."),
    (r"^styles\.(\d+)\.linear1\.", r"latent_codes.blocks.\1.odd_linear."),
]
_FUSION_BRANCHES = {1: 0, 2: 1, 3: 2}  # se1/conv1 is the coarsest fusion scale


def _fusion_rules(resolutions: tuple[int, ...]) -> list:
    rules = []
    for official, index in _FUSION_BRANCHES.items():
        if index < len(resolutions):
            rules += [(rf"^se{official}\.", f"fusion.branches.{resolutions[index]}.se."),
                      (rf"^conv{official}\.", f"fusion.branches.{resolutions[index]}.convs.")]
    merge_index = len(resolutions) + 1
    return rules + [(rf"^se{merge_index}\.", "fusion.merge_se."), (r"^out\.", "fusion.head.")]


def _rename(state: Mapping[str, torch.Tensor], rules: list) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, value in state.items():
        new_key = key
        for pattern, replacement in rules:
            new_key, hits = re.subn(pattern, replacement, new_key)
            if hits and pattern.startswith("^"):
                # a prefix rule fired: only the block-internal rules may still apply
                for block_pattern, block_replacement in _BLOCK_RULES:
                    new_key = re.sub(block_pattern, block_replacement, new_key)
                break
        renamed[new_key] = value
    return renamed


def unwrap_official(checkpoint: object, source: PathLike) -> dict[str, torch.Tensor]:
    """The tensors of an official file, whatever wrapper it has (`state_dict`, `state_dict1/2/3`, flat)."""
    checkpoint = require_mapping(checkpoint, source, "a GRAIN module checkpoint")
    for wrapper in _WRAPPERS:
        if wrapper in checkpoint:
            state = require_mapping(checkpoint[wrapper], source, f"'{wrapper}' as a state dict")
            break
    else:
        state = {key: value for key, value in checkpoint.items() if torch.is_tensor(value)}
    if not state:
        raise CheckpointError(f"{source}: no tensors found (expected one of {_WRAPPERS} or a flat state dict); "
                              f"top-level keys: {sorted(map(str, checkpoint))[:12]}")
    return strip_module_prefix(state)


def convert_invrrdb(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`InvRRDB.state_dict()` (`enc.*`, `dec.*`) -> GRAIN keys (`encoder.*`, `decoder.*`)."""
    return _rename({k: v for k, v in state.items() if k.startswith(("enc.", "dec."))}, _INVRRDB_RULES)


def convert_fea2code(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """codeStyleGAN's `encoder.styles.*` (or bare `styles.*`) -> GRAIN keys (`latent_codes.blocks.*`)."""
    styles = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.styles.")}
    styles = styles or {k: v for k, v in state.items() if k.startswith("styles.")}
    return _rename(styles, _FEA2CODE_RULES)


def convert_fusion(state: Mapping[str, torch.Tensor], resolutions: tuple[int, ...] = (256, 512, 1024)
                   ) -> dict[str, torch.Tensor]:
    """The `Fusion` module's unprefixed keys -> GRAIN keys (`fusion.*`) for fusion scales `resolutions`."""
    return _rename(state, _fusion_rules(tuple(resolutions)))


_PARTS: dict[str, tuple[str, tuple[str, ...], Callable]] = {
    # part: (what the file is, GRAIN sub-modules it fills, converter)
    "invrrdb": ("the official invRRDB_model.pt (encoder + decoder)", ("encoder", "decoder"), convert_invrrdb),
    "code_stylegan": ("the official codeStyleGAN_model.pt (latent-code bank)", ("latent_codes",), convert_fea2code),
    "fusion": ("the official Fusion_model.pt (fusion decoder)", ("fusion",), convert_fusion),
}


def expected_state(grain: nn.Module, modules: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """GRAIN's state for `modules`, without `latent_avg` (official files do not carry it)."""
    state = {}
    for name in modules:
        state.update({f"{name}.{key}": value for key, value in getattr(grain, name).state_dict().items()
                      if key != "latent_avg"})
    return state


def convert_official_file(path: PathLike, part: str, grain: nn.Module) -> dict[str, torch.Tensor]:
    """Read one official module file and return its tensors under GRAIN's keys, checked strictly."""
    if part not in _PARTS:
        raise ValueError(f"unknown GRAIN part {part!r}; known: {', '.join(_PARTS)}")
    what, modules, converter = _PARTS[part]
    state = unwrap_official(read_checkpoint(path), path)
    if part == "fusion":
        converted = converter(state, grain.config.fusion_resolutions)
    else:
        converted = converter(state)
    check_state_dict(expected_state(grain, modules), converted, source=path,
                     what=f"{what} for preset {_preset_name(grain)}")
    return converted


def _preset_name(grain: nn.Module) -> str:
    config = grain.config
    return f"hr {config.hr_size}, lr {config.lr_size}, channels {config.channels}"


def load_official_grain(grain: nn.Module, *, invrrdb: PathLike | None = None, code_stylegan: PathLike | None = None,
                        fusion: PathLike | None = None) -> list[str]:
    """Load any of the three official module files into `grain` (strictly, part by part).

    Returns a line per file loaded. Nothing is loaded unless every given file fits.
    """
    converted: dict[str, torch.Tensor] = {}
    loaded = []
    for part, path in (("invrrdb", invrrdb), ("code_stylegan", code_stylegan), ("fusion", fusion)):
        if path is not None:
            converted.update(convert_official_file(path, part, grain))
            loaded.append(f"{Path(path)} -> {', '.join(_PARTS[part][1])}")
    if converted:
        missing, unexpected = grain.load_state_dict(converted, strict=False)
        assert not unexpected, unexpected  # checked above; a failure here is a bug in the rules
    return loaded
