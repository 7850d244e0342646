"""Reading the checkpoint of a GRAIN training stage (Lightning's .ckpt): for the next stage (`read_stage_checkpoint`,
the `grain.*` tensors) and for the codec (`load_grain_from_stage_checkpoint`, a whole GRAIN to decode with).

A stage checkpoint holds `state_dict` (the stage's tensors: `grain.*`, the discriminator, ...; the frozen
StyleGAN2 generator is left out, it comes from the prior file), `hyper_parameters` (network, network_overrides,
prior_path, stage) and `grain_pl` (the exact GrainConfig the stage trained, among others).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from grain_pl.networks import GRAIN
from grain_pl.networks.config import build_config
from grain_pl.weights.grain_checkpoint import VERSION_KEY, build_grain, grain_config_from, load_prior_into
from grain_pl.weights.io import (
    CheckpointError,
    check_state_dict,
    read_checkpoint,
    read_safetensors_checkpoint,
    strip_prefix,
)

__all__ = ["load_grain_from_stage_checkpoint", "read_stage_checkpoint"]

# Stages that leave parts of GRAIN untrained (a Stage1 checkpoint decodes with random latent codes and fusion).
_UNTRAINED_PARTS = {"Stage1": "latent codes and fusion", "Stage2": "fusion"}


def _read_lightning_checkpoint(path: Path, not_ours: str) -> Mapping:
    """The checkpoint dict (weights_only=True; CheckpointError naming the file for bad bytes or no state_dict)."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, Mapping) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: {not_ours} (no 'state_dict')")
    state = checkpoint["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: {not_ours} (its 'state_dict' is a {type(state).__name__}, expected a dict "
                              "of tensors)")
    for key, value in state.items():
        if not isinstance(key, str) or not torch.is_tensor(value):
            raise CheckpointError(f"{path}: {not_ours} (its 'state_dict' holds {key!r}: {type(value).__name__}, "
                                  "expected tensors under string keys)")
    for entry in ("hyper_parameters", "grain_pl"):
        if checkpoint.get(entry) is not None and not isinstance(checkpoint[entry], Mapping):
            raise CheckpointError(f"{path}: {not_ours} (its {entry!r} is a {type(checkpoint[entry]).__name__}, "
                                  "expected a dict)")
    return checkpoint


def read_stage_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The `grain.*` tensors of a stage checkpoint (.ckpt) or of a grain_pl model file (.safetensors)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return {f"grain.{key}": value for key, value in read_safetensors_checkpoint(path).items()}
    checkpoint = _read_lightning_checkpoint(path, "not a Lightning checkpoint of a grain_pl stage")
    return {key: value for key, value in checkpoint["state_dict"].items() if key.startswith("grain.")}


def load_grain_from_stage_checkpoint(path: str | os.PathLike, prior_path: str | os.PathLike | None = None,
                                     prior_noise: str = "auto") -> tuple[GRAIN, str | None]:
    """A GRAIN (eval mode, CPU) from a stage .ckpt: its `grain.*` tensors (strictly) plus the StyleGAN2 prior file
    (`prior_path`, else the checkpoint's hyper_parameters["prior_path"]; a Lightning checkpoint of a GrainModule
    holds the generator itself), and the preset name when the stage used one unchanged.

    Raises CheckpointError naming the file: unreadable, not a stage checkpoint, no GRAIN tensors, mis-fitting
    tensors, or a prior that is unknown or missing. Warns for a Stage1/Stage2 checkpoint (parts untrained).
    """
    path = Path(path)
    checkpoint = _read_lightning_checkpoint(path, "neither a grain_pl model file (.safetensors) nor a Lightning "
                                                  "checkpoint of a grain_pl stage")
    hparams = checkpoint.get("hyper_parameters") or {}
    state = strip_prefix(checkpoint["state_dict"], "grain.")
    if not state:
        raise CheckpointError(f"{path}: holds no GRAIN weights (no 'grain.*' tensors; a prior-stage checkpoint?)")
    extra = checkpoint.get("grain_pl") or {}
    if "config" in extra:  # the exact config the stage trained
        config = grain_config_from(extra["config"], path, extra.get(VERSION_KEY))
    else:
        try:
            config = build_config(hparams.get("network", "paper-1024-lr16"), hparams.get("network_overrides"))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{path}: its hyper_parameters do not describe a GRAIN: {err}") from err
    network = hparams.get("network")
    preset = network if isinstance(network, str) and not hparams.get("network_overrides") else None

    # Stage checkpoints leave the frozen generator out (it comes from the prior file); a checkpoint of a
    # GrainModule itself (Lightning's trainer.save_checkpoint) has it.
    has_generator = any(key.startswith("generator.") for key in state)
    prior = prior_path
    if prior is None and not has_generator:
        prior = hparams.get("prior_path")
    if prior is None and not has_generator:
        raise CheckpointError(f"{path}: the checkpoint names no StyleGAN2 prior (hyper_parameters.prior_path is "
                              "not set, as in a Stage1 checkpoint); pass prior_path= (--prior) with the "
                              "rosinality file the later stages use")
    if prior is not None and not Path(prior).is_file():
        origin = "given as prior_path" if prior_path is not None else "from hyper_parameters.prior_path"
        raise CheckpointError(f"{path}: its StyleGAN2 prior {prior} ({origin}) does not exist; pass "
                              "prior_path= (--prior) with the file's location")
    stage = hparams.get("stage")
    if stage in _UNTRAINED_PARTS:
        warnings.warn(f"{path}: a {stage} checkpoint: the {_UNTRAINED_PARTS[stage]} are not trained yet, and "
                      "decoded images show it", stacklevel=3)

    with torch.device("meta"):  # no random initialisation: every tensor is loaded below
        grain = build_grain(config, path, prior_noise=prior_noise)
    grain.to_empty(device="cpu")
    expected = {key: value for key, value in grain.state_dict().items()
                if has_generator or not key.startswith("generator.")}
    check_state_dict(expected, state, source=path, what=f"GRAIN({preset or config})")
    grain.load_state_dict(state, strict=has_generator)
    if prior is not None:  # strict; also sets latent_avg, the mean W of the generator actually used
        load_prior_into(grain, prior)
    return grain.eval(), preset
