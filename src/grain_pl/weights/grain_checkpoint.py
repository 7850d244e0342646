"""grain_pl's own model file: a whole GRAIN (all parts, the prior and `latent_avg` included) as safetensors,
with its configuration in the header, so one file is enough to encode and decode. Also: putting a
rosinality StyleGAN2 prior into a GRAIN.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from grain_pl.networks import GRAIN, GrainConfig
from grain_pl.weights.io import (
    CheckpointError,
    PathLike,
    load_safetensors,
    load_strict,
    read_safetensors_metadata,
    save_safetensors,
)
from grain_pl.weights.stylegan2_rosinality import load_stylegan2_prior

FORMAT = "grain_pl.grain/1"
# The header entry (and the stage checkpoints' `grain_pl` entry) recording which grain_pl version wrote the file.
VERSION_KEY = "grain_pl_version"


def grain_pl_version() -> str:
    from grain_pl import __version__  # at call time: grain_pl/__init__.py imports this module

    return __version__


def grain_config_from(values: object, source: PathLike, written_by: object = None) -> GrainConfig:
    """The GrainConfig a file records, or a CheckpointError naming the file (and the unknown key, and which
    grain_pl version wrote the file when it says so) for anything this version cannot build."""
    writer = (f"written by grain_pl {written_by}" if written_by else "the file does not say which grain_pl version "
              "wrote it")
    if not isinstance(values, Mapping):
        raise CheckpointError(f"{source}: its GRAIN config is a {type(values).__name__}, expected a dict ({writer})")
    unknown = sorted(set(values) - {field.name for field in dataclasses.fields(GrainConfig)})
    if unknown:
        raise CheckpointError(
            f"{source}: its GRAIN config has the key(s) {', '.join(map(repr, unknown))}, which grain_pl "
            f"{grain_pl_version()} does not know ({writer}; a newer grain_pl may read it)")
    try:
        return GrainConfig(**values)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: its GRAIN config is not one grain_pl {grain_pl_version()} can build "
                              f"({writer}): {err}") from err


def load_prior_into(grain: GRAIN, path: PathLike) -> torch.nn.Module | None:
    """Load a rosinality StyleGAN2 file (`g_ema`, `latent_avg`, optional `d`) into `grain.generator`, strictly.

    Returns the file's discriminator (the stages fine-tune it), or None when the file has none.
    """
    config = grain.config
    generator, discriminator, latent_avg = load_stylegan2_prior(
        path, size=config.hr_size, style_dim=config.style_dim, n_mlp=config.mapping_layers,
        channel_multiplier=config.channel_multiplier, channel_max=config.generator_channel_max)
    load_strict(grain.generator, generator.state_dict(), source=path, what="the GRAIN preset's StyleGAN2 prior")
    grain.set_latent_avg(latent_avg)
    return discriminator


def save_grain(grain: GRAIN, path: PathLike, *, overwrite: bool = False, **metadata: str) -> Path:
    header = {"format": FORMAT, "config": json.dumps(grain.config.as_dict()), VERSION_KEY: grain_pl_version(),
              **metadata}
    return save_safetensors(grain.state_dict(), path, header, overwrite=overwrite)


def read_grain_config(path: PathLike) -> GrainConfig:
    header = read_safetensors_metadata(path, "cannot read it as a grain_pl model file (safetensors)")
    if header.get("format") != FORMAT or "config" not in header:
        raise CheckpointError(f"{path}: not a grain_pl model file (expected header format {FORMAT!r}, "
                              f"got {header.get('format')!r})")
    try:
        values = json.loads(header["config"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its header's GRAIN config is not valid JSON: {err}") from err
    return grain_config_from(values, path, header.get(VERSION_KEY))


def load_grain(path: PathLike, **grain_kwargs) -> GRAIN:
    """Build the GRAIN a model file describes and load it strictly (eval mode)."""
    config = read_grain_config(path)
    with torch.device("meta"):
        grain = build_grain(config, path, **grain_kwargs)
    grain.to_empty(device="cpu")
    load_strict(grain, load_safetensors(path), source=path, what=f"GRAIN({config})")
    return grain.eval()


def build_grain(config: GrainConfig, source: PathLike, **grain_kwargs) -> GRAIN:
    """`GRAIN(config)`, with a CheckpointError naming the file whose config cannot be built."""
    try:
        return GRAIN(config, **grain_kwargs)
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{source}: cannot build the GRAIN its config describes ({config}): {err}") from err
