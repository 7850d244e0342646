"""rosinality StyleGAN2 checkpoints (`stylegan2-ffhq-config-f.pt` and friends) <-> grain_pl's StyleGAN2.

The file is a `torch.save` dict. `convert_weight.py` writes {"g_ema", "latent_avg"} (+ "g", "d" on request);
`train.py` writes {"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"} with `args` an
`argparse.Namespace`. grain_pl's networks use rosinality's key names unchanged, so no key is renamed here;
this module reads the file safely, restores blur/upsample kernel buffers that some converted files lack,
infers the architecture from the tensor shapes, and loads strictly.
"""

from __future__ import annotations

import argparse
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from grain_pl.io.files import DestinationExistsError, check_finite, save_torch
from grain_pl.networks.stylegan2.discriminator import StyleGAN2Discriminator
from grain_pl.networks.stylegan2.generator import StyleGAN2Generator
from grain_pl.networks.stylegan2.layers import (
    BASE_CHANNELS,
    DEFAULT_BLUR_KERNEL,
    MULTIPLIED_FROM,
    SUPPORTED_SIZES,
    Blur,
    Upsample,
    stylegan2_channels,
)
from grain_pl.weights.io import (
    CheckpointError,
    PathLike,
    load_strict,
    read_checkpoint,
    require_mapping,
    strip_module_prefix,
)

# The only non-tensor class a rosinality file may contain (train.py pickles its argparse arguments).
ROSINALITY_ALLOWED = (argparse.Namespace,)

# Samples and seed for the W mean when a file has no `latent_avg` (convert_weight.py stores the TF average).
LATENT_AVG_SAMPLES = 4096
LATENT_AVG_SEED = 0


@dataclass
class RosinalityPrior:
    """The parts of a rosinality checkpoint grain_pl uses; absent parts are None."""

    g_ema: dict[str, Tensor] | None
    g: dict[str, Tensor] | None
    d: dict[str, Tensor] | None
    latent_avg: Tensor | None
    args: dict | None


def _state_dict_entry(ckpt: Mapping, name: str, source: PathLike) -> dict[str, Tensor] | None:
    if ckpt.get(name) is None:
        return None
    state = strip_module_prefix(require_mapping(ckpt[name], source, f"'{name}' as a state dict"))
    not_tensors = [key for key, value in state.items() if not isinstance(value, Tensor)]
    if not_tensors:
        raise CheckpointError(f"{source}: '{name}' holds non-tensor values under {sorted(not_tensors)[:12]}")
    return state


def split_rosinality_checkpoint(ckpt: Mapping, source: PathLike) -> RosinalityPrior:
    """Pick `g_ema`, `g`, `d`, `latent_avg` and `args` out of a loaded rosinality checkpoint.

    Raises CheckpointError (naming `source`) when `g_ema` is missing or an entry has the wrong type.
    """
    ckpt = require_mapping(ckpt, source, "a rosinality StyleGAN2 checkpoint")
    if "g_ema" not in ckpt:
        hint = ""
        if any(str(key).startswith(("style.", "conv1.", "to_rgb1.")) for key in ckpt):
            hint = " (it looks like a bare generator state dict: save it as {'g_ema': state_dict, 'latent_avg': ...})"
        raise CheckpointError(
            f"{source}: not a rosinality StyleGAN2 checkpoint: no 'g_ema' entry; top-level keys: "
            f"{sorted(map(str, ckpt))[:12]}{hint}"
        )

    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and not isinstance(latent_avg, Tensor):
        raise CheckpointError(f"{source}: 'latent_avg' should be a tensor, found {type(latent_avg).__name__}")

    args = ckpt.get("args")
    if isinstance(args, argparse.Namespace):
        args = vars(args).copy()
    elif isinstance(args, Mapping):
        args = dict(args)
    elif args is not None:
        raise CheckpointError(f"{source}: 'args' should be an argparse.Namespace or a dict, "
                              f"found {type(args).__name__}")

    return RosinalityPrior(
        g_ema=_state_dict_entry(ckpt, "g_ema", source),
        g=_state_dict_entry(ckpt, "g", source),
        d=_state_dict_entry(ckpt, "d", source),
        latent_avg=latent_avg,
        args=args,
    )


def restore_kernel_buffers(state: Mapping[str, Tensor], network: nn.Module) -> dict[str, Tensor]:
    """A copy of `state` with every blur/upsample `*.kernel` buffer that `network` expects but `state` lacks.

    The kernels are constants, outer([1, 3, 3, 1]) / 64 (times 4 for the to_rgbs' upsampling and the
    blur after a transposed conv), so files converted without them lose nothing. Present kernels are kept.
    """
    restored = dict(state)
    for name, module in network.named_modules():
        if isinstance(module, (Blur, Upsample)):
            key = f"{name}.kernel" if name else "kernel"
            if key not in restored:
                restored[key] = module.fresh_kernel(device="cpu")
    return restored


def _indices(state: Mapping[str, Tensor], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted({int(match.group(1)) for key in state if (match := regex.match(key))})


def _first_dim(state: Mapping[str, Tensor], candidates: Sequence[tuple[str, int]]) -> int | None:
    """Size of dimension `dim` of the first key in `candidates` that `state` has."""
    for key, dim in candidates:
        if key in state and state[key].ndim > dim:
            return int(state[key].shape[dim])
    return None


def infer_generator_config(state: Mapping[str, Tensor], source: PathLike = "<state dict>") -> dict:
    """size, style_dim, n_mlp, channel_multiplier and channel_max of a rosinality generator state dict.

    Read from tensor shapes only. Several keys can give each number, so a checkpoint missing some keys still
    yields a config and the strict load that follows lists what is missing. channel_multiplier is only
    visible at resolutions >= 64 below the channel cap; where it is invisible the default 2 is returned
    (any value then builds the same network).
    """
    style_dim = _first_dim(state, [("conv1.conv.modulation.weight", 1), ("to_rgb1.conv.modulation.weight", 1),
                                   ("style.1.weight", 1)])
    if style_dim is None:
        raise CheckpointError(f"{source}: cannot infer style_dim: none of conv1.conv.modulation.weight, "
                              f"to_rgb1.conv.modulation.weight, style.1.weight is present")
    # Highest index rather than a count, so one missing layer shows up as a missing key in the strict load.
    mapping_layers = _indices(state, r"style\.(\d+)\.")
    if not mapping_layers:
        raise CheckpointError(f"{source}: no mapping-network keys (style.1.weight, style.1.bias, ...)")
    n_mlp = max(mapping_layers)

    blocks = set(_indices(state, r"to_rgbs\.(\d+)\.")) | {i // 2 for i in _indices(state, r"convs\.(\d+)\.")}
    if not blocks:
        raise CheckpointError(f"{source}: cannot infer the size: no 'to_rgbs.*' or 'convs.*' keys")
    size = 2 ** (max(blocks) + 3)
    if size not in SUPPORTED_SIZES:
        raise CheckpointError(f"{source}: the keys describe a {size}px generator; supported sizes are "
                              f"{SUPPORTED_SIZES}")

    # Observed channels per resolution, from whichever key of that resolution is present.
    observed: dict[int, int] = {}
    channels_4 = _first_dim(state, [("input.input", 1), ("conv1.activate.bias", 0), ("to_rgb1.conv.weight", 2)])
    if channels_4 is not None:
        observed[4] = channels_4
    for block in sorted(blocks):
        channels = _first_dim(state, [(f"to_rgbs.{block}.conv.weight", 2),
                                      (f"convs.{2 * block}.activate.bias", 0),
                                      (f"convs.{2 * block + 1}.activate.bias", 0),
                                      (f"convs.{2 * block + 1}.conv.weight", 2)])
        if channels is not None:
            observed[2 ** (block + 3)] = channels

    # Channels below MULTIPLIED_FROM are min(512, channel_max); above that base * multiplier, capped at channel_max.
    small = [channels for res, channels in observed.items() if res < MULTIPLIED_FROM]
    channel_max = max(512, *observed.values()) if observed else 512
    if small and min(small) < 512:
        channel_max = min(small)
    channel_multiplier = 2
    for res, base in BASE_CHANNELS.items():
        if res >= MULTIPLIED_FROM and res in observed and observed[res] < channel_max:
            if observed[res] % base:
                raise CheckpointError(f"{source}: {observed[res]} channels at {res}px is not a multiple of {base} "
                                      f"(rosinality's table); channels found: {observed}")
            channel_multiplier = observed[res] // base
            break

    expected = stylegan2_channels(size, channel_multiplier, channel_max)
    wrong = {res: (observed[res], expected[res]) for res in observed if observed[res] != expected[res]}
    if wrong:
        detail = ", ".join(f"{res}px: {got} (table: {want})" for res, (got, want) in sorted(wrong.items()))
        raise CheckpointError(f"{source}: channel counts do not follow rosinality's table for channel_multiplier "
                              f"{channel_multiplier}, channel_max {channel_max}: {detail}")
    return dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier,
                channel_max=channel_max)


def _describe(network: nn.Module, config: Mapping, what: str) -> str:
    settings = ", ".join(f"{key}={value}" for key, value in config.items())
    return f"{type(network).__name__}({settings}) from '{what}'"


def load_stylegan2_prior(
    path: PathLike,
    *,
    size: int | None = None,
    style_dim: int | None = None,
    n_mlp: int | None = None,
    channel_multiplier: int | None = None,
    channel_max: int | None = None,
    blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
    lr_mlp: float = 0.01,
    load_discriminator: bool = True,
    latent_avg_samples: int = LATENT_AVG_SAMPLES,
    latent_avg_seed: int = LATENT_AVG_SEED,
) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator | None, Tensor]:
    """Build and strictly load the generator (`g_ema`) and, when present, the discriminator (`d`) of a file.

    The architecture is inferred from `g_ema`'s shapes; any argument given overrides the inferred value, and a
    file that does not fit it raises. Missing `*.kernel` buffers are rebuilt; any other missing, unexpected or
    mis-shaped key raises a CheckpointError that names the file and lists the keys.

    Returns:
        (generator in eval mode, discriminator in eval mode or None, latent_avg of shape (style_dim,)).
        Without `latent_avg` in the file, it is the mean of `latent_avg_samples` mapped z drawn with a fixed
        seed, and a warning says so.
    """
    prior = split_rosinality_checkpoint(read_checkpoint(path, allow=ROSINALITY_ALLOWED), path)
    config = infer_generator_config(prior.g_ema, source=path)
    # train.py records n_mlp in `args`; shapes cannot tell a file that lost its last mapping layer.
    recorded_n_mlp = (prior.args or {}).get("n_mlp")
    if isinstance(recorded_n_mlp, int) and recorded_n_mlp > config["n_mlp"]:
        config["n_mlp"] = recorded_n_mlp
    overrides = dict(size=size, style_dim=style_dim, n_mlp=n_mlp, channel_multiplier=channel_multiplier,
                     channel_max=channel_max)
    config.update({key: value for key, value in overrides.items() if value is not None})

    generator = StyleGAN2Generator(**config, blur_kernel=blur_kernel, lr_mlp=lr_mlp)
    load_strict(generator, restore_kernel_buffers(prior.g_ema, generator), source=path,
                what=_describe(generator, config, "g_ema"))
    generator.eval()

    discriminator = None
    if load_discriminator and prior.d is not None:
        d_config = dict(size=config["size"], channel_multiplier=config["channel_multiplier"],
                        channel_max=config["channel_max"])
        discriminator = StyleGAN2Discriminator(**d_config, blur_kernel=blur_kernel)
        load_strict(discriminator, restore_kernel_buffers(prior.d, discriminator), source=path,
                    what=_describe(discriminator, d_config, "d"))
        discriminator.eval()

    if prior.latent_avg is None:
        warnings.warn(
            f"{path}: no 'latent_avg'; using the mean of {latent_avg_samples} mapped z (seed {latent_avg_seed})",
            stacklevel=2,
        )
        rng = torch.Generator().manual_seed(latent_avg_seed)
        latent_avg = generator.mean_latent(latent_avg_samples, rng=rng).reshape(-1)
    else:
        if prior.latent_avg.numel() != generator.style_dim:
            raise CheckpointError(f"{path}: 'latent_avg' has shape {tuple(prior.latent_avg.shape)}, expected "
                                  f"({generator.style_dim},)")
        latent_avg = prior.latent_avg.detach().reshape(-1).float()
    return generator, discriminator, latent_avg


def _cpu_state(network: nn.Module) -> dict[str, Tensor]:
    return {key: value.detach().cpu() for key, value in network.state_dict().items()}


def export_rosinality(
    generator: StyleGAN2Generator,
    discriminator: StyleGAN2Discriminator | None,
    latent_avg: Tensor,
    path: PathLike,
    g: StyleGAN2Generator | None = None,
    args: argparse.Namespace | Mapping | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write a file in rosinality's layout: {"g_ema", "latent_avg"} plus "d", "g" and "args" when given.

    `generator` is saved as `g_ema` (the EMA weights rosinality samples with); `g` is the raw training
    generator. `args` is stored as an argparse.Namespace, as rosinality's train.py does. The file is written to
    a temporary name and then renamed, so a crash never leaves half a checkpoint; an existing file is only
    replaced with `overwrite=True`.
    """
    path = Path(path)
    if path.exists() and not overwrite:  # before gathering the tensors
        raise DestinationExistsError(path)
    ckpt: dict[str, object] = {"g_ema": _cpu_state(generator), "latent_avg": latent_avg.detach().cpu().reshape(-1)}
    if discriminator is not None:
        ckpt["d"] = _cpu_state(discriminator)
    if g is not None:
        ckpt["g"] = _cpu_state(g)
    if args is not None:
        ckpt["args"] = args if isinstance(args, argparse.Namespace) else argparse.Namespace(**dict(args))
    check_finite({key: value for key, value in ckpt.items() if key != "args"}, path)  # a diverged prior: refuse
    return save_torch(ckpt, path, overwrite=overwrite)
