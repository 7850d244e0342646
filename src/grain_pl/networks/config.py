"""The few numbers that build a GRAIN network, and the named presets.

Everything else (how many downsampling convs, which decoder scales exist, how many W+ codes, which
generator features the fusion reads) is derived from these numbers, so one code path builds the paper's
1024-px network, the 256-px Cat/Church networks and the tiny networks the tests train.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass

from grain_pl.networks.stylegan2.layers import channels_at

ENCODERS = ("learned", "bicubic")
LR_PARAMETERISATIONS = ("free", "bicubic_residual")
HR_PARAMETERISATIONS = ("free", "bicubic_residual")


def _log2_exact(value: int, name: str) -> int:
    exponent = int(round(math.log2(value))) if value > 0 else -1
    if value <= 0 or 2**exponent != value:
        raise ValueError(f"{name} must be a power of two, got {value}")
    return exponent


@dataclass(frozen=True)
class GrainConfig:
    """Sizes and widths of a GRAIN network (defaults: the official 1024-px, 16x16-LR architecture)."""

    hr_size: int = 1024
    lr_size: int = 16
    # Rescaling module (encoder + decoder): ESRGAN widths nf / gc.
    channels: int = 64
    growth_channels: int = 32
    encoder_blocks: int = 10
    # RRDBs per decoder scale, coarse (LR) to fine (HR). None: the official rule, counted from the HR end
    # (HR and HR/2: one light RDB-4C block; HR/4: 1 RRDB; HR/8: 2; every coarser scale: 3).
    decoder_blocks: tuple[int, ...] | None = None
    light_decoder_scales: int = 2
    # Frozen StyleGAN2 prior (rosinality layout). Its resolution equals hr_size.
    style_dim: int = 512
    mapping_layers: int = 8
    channel_multiplier: int = 2
    generator_channel_max: int = 512
    # Latent-code heads reduce a 16x16 feature (or the LR size, if smaller) to one style_dim vector.
    code_head_size: int = 16
    # Fusion: decoder + generator features at the `len(fusion_channels)` finest scales.
    fusion_channels: tuple[int, ...] = (128, 64, 32)
    fusion_head_channels: tuple[int, ...] = (128, 64)
    se_reduction: int = 16
    # Which encoder makes the LR. "learned": the paper's network, trained with the decoder. "bicubic": the fixed
    # antialiased bicubic downscale of the 8-bit HR, rounded to 8 bits (exactly the thumbnail `grain evaluate`'s
    # bicubic baseline stores), with no parameters: the paper's "without invertible encoder" ablation (which fed a
    # bilinear LR), so the decoder, the latent codes and the fusion learn to upscale thumbnails anyone can make.
    encoder: str = "learned"
    # What the learned encoder's output means. "free": the LR itself (the paper). "bicubic_residual": a correction
    # added to the antialiased bicubic thumbnail of the HR (its last conv starts at zero, so an untrained encoder
    # already stores the thumbnail); the LR-guidance loss then bounds how far the LR strays from a thumbnail.
    lr_parameterisation: str = "free"
    # What the decoder's y_inv head and the fusion's output mean. "free": HR images (the paper).
    # "bicubic_residual": y_inv = the LR's bicubic upscale + the decoder head's correction, and the final image =
    # y_inv + the fusion's correction (both last convs start at zero: an untrained network decodes as the bicubic
    # baseline does, and stage 3 starts from stage 1's y_inv).
    hr_parameterisation: str = "free"

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.encoder == "bicubic" and self.lr_parameterisation != "free":
            raise ValueError(f"lr_parameterisation={self.lr_parameterisation!r} describes the learned encoder's "
                             "output, and encoder='bicubic' has none: leave lr_parameterisation at 'free'")
        if self.lr_parameterisation not in LR_PARAMETERISATIONS:
            raise ValueError(f"lr_parameterisation must be one of {LR_PARAMETERISATIONS}, "
                             f"got {self.lr_parameterisation!r}")
        if self.hr_parameterisation not in HR_PARAMETERISATIONS:
            raise ValueError(f"hr_parameterisation must be one of {HR_PARAMETERISATIONS}, "
                             f"got {self.hr_parameterisation!r}")
        hr_log2 = _log2_exact(self.hr_size, "hr_size")
        lr_log2 = _log2_exact(self.lr_size, "lr_size")
        if not 2 <= self.code_head_size <= 16:
            raise ValueError(f"code_head_size must be 2..16 (four stride-2 convs at most), got {self.code_head_size}")
        _log2_exact(self.code_head_size, "code_head_size")
        if not 8 <= self.hr_size <= 1024:
            raise ValueError(f"hr_size must be between 8 and 1024 (a StyleGAN2 prior size), got {self.hr_size}")
        if lr_log2 >= hr_log2:
            raise ValueError(f"lr_size ({self.lr_size}) must be smaller than hr_size ({self.hr_size})")
        if self.decoder_blocks is not None:
            object.__setattr__(self, "decoder_blocks", tuple(self.decoder_blocks))
            if len(self.decoder_blocks) != len(self.decoder_resolutions):
                raise ValueError(
                    f"decoder_blocks needs one count per decoder scale {self.decoder_resolutions}, "
                    f"got {self.decoder_blocks}"
                )
        object.__setattr__(self, "fusion_channels", tuple(self.fusion_channels))
        object.__setattr__(self, "fusion_head_channels", tuple(self.fusion_head_channels))
        if not 1 <= len(self.fusion_channels) <= len(self.decoder_resolutions):
            raise ValueError(
                f"fusion_channels names {len(self.fusion_channels)} scales, but the decoder has only "
                f"{len(self.decoder_resolutions)} ({self.decoder_resolutions})"
            )

    # ----- derived numbers -----
    @property
    def scale_factor(self) -> int:
        return self.hr_size // self.lr_size

    @property
    def num_downsamples(self) -> int:
        return int(math.log2(self.scale_factor))

    @property
    def decoder_resolutions(self) -> tuple[int, ...]:
        """Every scale the decoder visits, LR to HR; the decoder returns one feature map at each."""
        return tuple(self.lr_size * 2**step for step in range(self.num_downsamples + 1))

    @property
    def blocks_per_scale(self) -> dict[int, int]:
        if self.decoder_blocks is not None:
            return dict(zip(self.decoder_resolutions, self.decoder_blocks))
        from_hr_end = (1, 1, 1, 2)  # HR, HR/2, HR/4, HR/8; coarser scales get 3
        count = len(self.decoder_resolutions)
        return {
            resolution: from_hr_end[count - 1 - index] if count - 1 - index < len(from_hr_end) else 3
            for index, resolution in enumerate(self.decoder_resolutions)
        }

    def uses_light_blocks(self, resolution: int) -> bool:
        return resolution in self.decoder_resolutions[len(self.decoder_resolutions) - self.light_decoder_scales:]

    @property
    def num_ws(self) -> int:
        """W+ codes of a StyleGAN2 at hr_size: two per resolution from 8, plus the 4x4 conv and first ToRGB."""
        return 2 * int(math.log2(self.hr_size)) - 2

    @property
    def fusion_resolutions(self) -> tuple[int, ...]:
        return self.decoder_resolutions[-len(self.fusion_channels):]

    def generator_channels(self, resolution: int) -> int:
        """rosinality's channel table, capped at generator_channel_max."""
        return channels_at(resolution, self.channel_multiplier, self.generator_channel_max)

    def replace(self, **changes) -> GrainConfig:
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_TINY = dict(
    channels=8, growth_channels=4, encoder_blocks=1, style_dim=32, mapping_layers=2,
    generator_channel_max=16, fusion_channels=(8, 8, 8), fusion_head_channels=(8, 8),
)

PRESETS: dict[str, GrainConfig] = {
    # The official architecture (CelebA-HQ / FFHQ prior): exactly cszzx/GRAIN's modules.
    "paper-1024-lr16": GrainConfig(hr_size=1024, lr_size=16),
    "paper-1024-lr32": GrainConfig(hr_size=1024, lr_size=32),
    "paper-1024-lr64": GrainConfig(hr_size=1024, lr_size=64),
    "paper-1024-lr128": GrainConfig(hr_size=1024, lr_size=128),
    # Cat and LSUN-Church at 256 px, 16x (a 256-px config-f StyleGAN2 prior).
    "cat-256-lr16": GrainConfig(hr_size=256, lr_size=16),
    "church-256-lr16": GrainConfig(hr_size=256, lr_size=16),
    # The embedded demo (`make demo`): minutes on a CPU, real photos.
    "demo-64-lr8": GrainConfig(hr_size=64, lr_size=8, channels=32, growth_channels=16, encoder_blocks=2,
                               decoder_blocks=(2, 2, 1, 1), style_dim=128, mapping_layers=4, generator_channel_max=64,
                               fusion_channels=(32, 32, 32), fusion_head_channels=(32, 32)),
    # The demo's networks with the paper's 16x16 LR (so 4x, not 8x): a thumbnail big enough for JPEG to be a
    # thumbnail codec (at 8x8 a JPEG outweighs the PNG), where `grain demo --preset demo-64-lr16 --jpeg-robust`
    # measures re-encoding (docs/training.md, "Robust to JPEG"). The 8x8 scale's two RRDBs go; the rest is the same.
    "demo-64-lr16": GrainConfig(hr_size=64, lr_size=16, channels=32, growth_channels=16, encoder_blocks=2,
                                decoder_blocks=(2, 1, 1), style_dim=128, mapping_layers=4, generator_channel_max=64,
                                fusion_channels=(32, 32, 32), fusion_head_channels=(32, 32)),
    # Tiny networks for tests: seconds per step on a CPU.
    "tiny-32-lr8": GrainConfig(hr_size=32, lr_size=8, decoder_blocks=(1, 1, 1), **_TINY),
    "tiny-64-lr8": GrainConfig(hr_size=64, lr_size=8, decoder_blocks=(1, 1, 1, 1), **_TINY),
    "tiny-64-lr4": GrainConfig(hr_size=64, lr_size=4, decoder_blocks=(1, 1, 1, 1, 1), **_TINY),
}


def get_preset(name: str, **overrides) -> GrainConfig:
    """A named preset, optionally with some numbers changed (`get_preset("tiny-32-lr8", channels=16)`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]


def build_config(network: str | Mapping | GrainConfig, overrides: Mapping | None = None) -> GrainConfig:
    """A GrainConfig from a preset name, a GrainConfig as a dict (`as_dict()`) or a GrainConfig, with some numbers
    changed by `overrides`."""
    if isinstance(network, GrainConfig):
        config = network
    elif isinstance(network, str):
        config = get_preset(network)
    else:
        config = GrainConfig(**dict(network))
    return config.replace(**dict(overrides)) if overrides else config


__all__ = ["ENCODERS", "HR_PARAMETERISATIONS", "LR_PARAMETERISATIONS", "GrainConfig", "PRESETS", "build_config",
           "get_preset"]
