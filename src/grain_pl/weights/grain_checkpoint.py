"""grain_pl's own model file: a whole GRAIN (all parts, the prior and `latent_avg` included) as safetensors,
with its configuration in the header, so one file is enough to encode and decode. Also: putting a
rosinality StyleGAN2 prior into a GRAIN.
"""

from __future__ import annotations

import json
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
    header = {"format": FORMAT, "config": json.dumps(grain.config.as_dict()), **metadata}
    return save_safetensors(grain.state_dict(), path, header, overwrite=overwrite)


def read_grain_config(path: PathLike) -> GrainConfig:
    header = read_safetensors_metadata(path, "cannot read it as a grain_pl model file (safetensors)")
    if header.get("format") != FORMAT or "config" not in header:
        raise CheckpointError(f"{path}: not a grain_pl model file (expected header format {FORMAT!r}, "
                              f"got {header.get('format')!r})")
    return GrainConfig(**json.loads(header["config"]))


def load_grain(path: PathLike, **grain_kwargs) -> GRAIN:
    """Build the GRAIN a model file describes and load it strictly (eval mode)."""
    config = read_grain_config(path)
    with torch.device("meta"):
        grain = GRAIN(config, **grain_kwargs)
    grain.to_empty(device="cpu")
    load_strict(grain, load_safetensors(path), source=path, what=f"GRAIN({config})")
    return grain.eval()
