"""StyleGAN2 generator (rosinality layout): z -> w (mapping), w_plus -> image + per-resolution features.

GRAIN uses it as a frozen prior: its latent-code layers predict `w_plus` directly and read the features of the
last resolutions (the "Scale-Specific Generative Prior Module" of the paper). `synthesize` is that entry point;
`forward` is a rosinality-like convenience (z or w, truncation, style mixing).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from grain_pl.networks.stylegan2.layers import (
    DEFAULT_BLUR_KERNEL,
    ConstantInput,
    EqualLinear,
    PixelNorm,
    StyledConv,
    ToRGB,
    stylegan2_channels,
)

NoiseMode = Literal["random", "const", "zero"]
NOISE_MODES = ("random", "const", "zero")


@dataclass
class SynthesisOutput:
    """What the synthesis network returns.

    Attributes:
        image: (B, 3, size, size), roughly in [-1, 1].
        features: resolution -> activation after the last StyledConv at that resolution (after noise and
            leaky ReLU, before ToRGB); empty unless `return_features=True`. Key 4 is `conv1`'s output.
    """

    image: Tensor
    features: dict[int, Tensor] = field(default_factory=dict)


class StyleGAN2Generator(nn.Module):
    """rosinality's StyleGAN2 `Generator`, with the same state-dict keys and numerics.

    Args:
        size: output resolution, a power of two from 8 to 1024.
        style_dim: dimension of z and w.
        n_mlp: number of EqualLinear layers of the mapping network.
        channel_multiplier: 2 for config-f (the FFHQ-1024 prior).
        blur_kernel: 1-D taps of the up-sampling filter.
        lr_mlp: learning-rate multiplier of the mapping network.
        channel_max: cap on every resolution's channel count (512 reproduces rosinality; small values make tiny
            test networks).
    """

    def __init__(
        self,
        size: int,
        style_dim: int = 512,
        n_mlp: int = 8,
        channel_multiplier: int = 2,
        blur_kernel: Sequence[float] = DEFAULT_BLUR_KERNEL,
        lr_mlp: float = 0.01,
        channel_max: int = 512,
    ):
        super().__init__()
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.channel_max = channel_max
        self.channels = stylegan2_channels(size, channel_multiplier, channel_max)
        self.log_size = int(math.log2(size))
        # One conv at 4x4, then two per resolution block; w_plus has one more entry (the final ToRGB).
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.num_ws = self.log_size * 2 - 2
        self.block_resolutions = [2**i for i in range(3, self.log_size + 1)]  # 8 .. size
        self.noise_resolutions = [4] + [res for res in self.block_resolutions for _ in range(2)]

        # Mapping network: z -> w.
        self.style = nn.Sequential(
            PixelNorm(),
            *[EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu") for _ in range(n_mlp)],
        )

        # Synthesis network. Attribute names and registration order follow rosinality's state dict.
        channels_4 = self.channels[4]
        self.input = ConstantInput(channels_4)
        self.conv1 = StyledConv(channels_4, channels_4, 3, style_dim, blur_kernel=blur_kernel)
        self.to_rgb1 = ToRGB(channels_4, style_dim, upsample=False, blur_kernel=blur_kernel)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = channels_4
        for res in self.block_resolutions:
            out_channels = self.channels[res]
            self.convs.append(StyledConv(in_channels, out_channels, 3, style_dim, upsample=True,
                                         blur_kernel=blur_kernel))
            self.convs.append(StyledConv(out_channels, out_channels, 3, style_dim, blur_kernel=blur_kernel))
            self.to_rgbs.append(ToRGB(out_channels, style_dim, blur_kernel=blur_kernel))
            in_channels = out_channels

        # Fixed noise maps for noise_mode="const" (saved in rosinality checkpoints as noises.noise_{i}).
        self.noises = nn.Module()
        for index, res in enumerate(self.noise_resolutions):
            self.noises.register_buffer(f"noise_{index}", torch.randn(1, 1, res, res))
        # Blocks from this resolution up are recomputed in the backward pass instead of keeping their activations
        # (grain_pl.networks.training_memory; None: all kept, as rosinality). Same values and gradients.
        self.checkpoint_min_size: int | None = None

    @property
    def n_latent(self) -> int:
        """rosinality's name for `num_ws`."""
        return self.num_ws

    def feature_channels(self, res: int) -> int:
        """Channels of `features[res]` returned by `synthesize`."""
        if res not in self.channels:
            raise KeyError(f"no features at resolution {res}; available: {sorted(self.channels)}")
        return self.channels[res]

    # --- mapping --------------------------------------------------------------------------------------------

    def mapping(self, z: Tensor) -> Tensor:
        """(B, style_dim) z -> (B, style_dim) w: PixelNorm, then the MLP."""
        return self.style(z)

    @torch.no_grad()
    def mean_latent(self, n: int = 4096, rng: torch.Generator | None = None) -> Tensor:
        """(1, style_dim) mean of `n` mapped N(0, 1) samples (the truncation centre)."""
        device = self.input.input.device
        z = torch.randn(n, self.style_dim, generator=rng, device=rng.device if rng is not None else device)
        return self.mapping(z.to(device)).mean(0, keepdim=True)

    # --- synthesis ------------------------------------------------------------------------------------------

    def _noise_inputs(
        self,
        batch_size: int,
        noise_mode: NoiseMode,
        noise: Sequence[Tensor | None] | None,
        rng: torch.Generator | None,
        like: Tensor,
    ) -> list[Tensor | None]:
        """One noise map (or None: add nothing) per StyledConv; explicit entries of `noise` win."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if noise is not None and len(noise) != self.num_layers:
            raise ValueError(f"noise: expected {self.num_layers} maps (one per StyledConv), got {len(noise)}")
        maps: list[Tensor | None] = []
        for index, res in enumerate(self.noise_resolutions):
            if noise is not None and noise[index] is not None:
                maps.append(noise[index])
            elif noise_mode == "const":
                maps.append(getattr(self.noises, f"noise_{index}"))
            elif noise_mode == "random":
                # Draw on the generator's device (a CPU torch.Generator cannot fill a CUDA tensor), then move.
                draw_device = rng.device if rng is not None else like.device
                fresh = torch.randn(batch_size, 1, res, res, generator=rng, device=draw_device, dtype=like.dtype)
                maps.append(fresh.to(like.device))
            else:
                maps.append(None)
        return maps

    def synthesize(
        self,
        w_plus: Tensor,
        noise_mode: NoiseMode = "random",
        noise: Sequence[Tensor | None] | None = None,
        return_features: bool = False,
        rng: torch.Generator | None = None,
    ) -> SynthesisOutput:
        """Render images from W+ codes.

        Args:
            w_plus: (B, num_ws, style_dim). w_0 drives conv1, w_1 to_rgb1 and the first conv at 8x8; the block
                at resolution 2**(j+3) uses w_{1+2j} and w_{2+2j} for its convs and w_{3+2j} for its ToRGB.
            noise_mode: "random" draws N(0, 1) maps every call, "const" uses the stored `noises` buffers
                (deterministic), "zero" adds no noise.
            noise: optional list of `num_layers` maps, each broadcastable to (B, 1, res, res); a None entry
                falls back to `noise_mode`.
            return_features: also return the per-resolution activations (see SynthesisOutput).
            rng: torch.Generator for "random" noise.
        """
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.num_ws, self.style_dim):
            raise ValueError(f"w_plus: expected (B, {self.num_ws}, {self.style_dim}), got {tuple(w_plus.shape)}")
        batch_size = w_plus.shape[0]
        noises = self._noise_inputs(batch_size, noise_mode, noise, rng, like=w_plus)
        features: dict[int, Tensor] = {}

        out = self.conv1(self.input(batch_size), w_plus[:, 0], noises[0])
        if return_features:
            features[4] = out
        rgb = self.to_rgb1(out, w_plus[:, 1])
        for block, res in enumerate(self.block_resolutions):
            w_index = 1 + 2 * block  # also the index of this block's first noise map
            styles = w_plus[:, w_index:w_index + 3]
            if self.checkpoint_min_size is not None and res >= self.checkpoint_min_size and torch.is_grad_enabled():
                out, rgb = checkpoint(self._block, block, out, styles, rgb, noises[w_index], noises[w_index + 1],
                                      use_reentrant=False)
            else:
                out, rgb = self._block(block, out, styles, rgb, noises[w_index], noises[w_index + 1])
            if return_features:
                features[res] = out
        return SynthesisOutput(image=rgb, features=features)

    def _block(self, block: int, out: Tensor, styles: Tensor, rgb: Tensor, noise_a: Tensor | None,
               noise_b: Tensor | None) -> tuple[Tensor, Tensor]:
        """One resolution block: two StyledConvs (the first upsamples) and the ToRGB skip."""
        out = self.convs[2 * block](out, styles[:, 0], noise_a)
        out = self.convs[2 * block + 1](out, styles[:, 1], noise_b)
        return out, self.to_rgbs[block](out, styles[:, 2], rgb)

    def forward(
        self,
        styles: Tensor | Sequence[Tensor],
        input_is_latent: bool = False,
        noise_mode: NoiseMode = "random",
        truncation: float = 1.0,
        truncation_latent: Tensor | None = None,
        inject_index: int | None = None,
        noise: Sequence[Tensor | None] | None = None,
        return_features: bool = False,
        rng: torch.Generator | None = None,
    ) -> SynthesisOutput:
        """rosinality-style call: one or two z (or w) batches, optional truncation and style mixing.

        Args:
            styles: a tensor or a list of one or two tensors, each (B, style_dim); with one tensor of shape
                (B, num_ws, style_dim) and `input_is_latent`, it is used as W+ directly.
            input_is_latent: the styles are already w (skip the mapping network).
            noise_mode, noise, return_features, rng: as in `synthesize`.
            truncation: psi; values below 1 pull every w towards `truncation_latent`.
            truncation_latent: (1, style_dim) centre for truncation, e.g. `mean_latent()`.
            inject_index: with two styles, W+ entries [0, inject_index) come from the first and the rest from
                the second; drawn uniformly from [1, num_ws - 1] when None.
        """
        styles = [styles] if isinstance(styles, Tensor) else list(styles)
        if not 1 <= len(styles) <= 2:
            raise ValueError(f"styles: expected one or two tensors, got {len(styles)}")
        if any(style.ndim != 2 for style in styles) and not (len(styles) == 1 and input_is_latent):
            raise ValueError(f"styles: expected (B, {self.style_dim}) tensors (or one (B, num_ws, style_dim) W+ "
                             f"with input_is_latent=True), got shapes {[tuple(s.shape) for s in styles]}")
        if not input_is_latent:
            styles = [self.mapping(z) for z in styles]
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (e.g. generator.mean_latent())")
            styles = [truncation_latent + truncation * (w - truncation_latent) for w in styles]

        if len(styles) == 1:
            w = styles[0]
            w_plus = w if w.ndim == 3 else w.unsqueeze(1).repeat(1, self.num_ws, 1)
        else:
            if inject_index is None:
                inject_index = int(torch.randint(1, self.num_ws, (1,), generator=rng,
                                                 device=rng.device if rng is not None else None).item())
            first, second = styles
            w_plus = torch.cat([first.unsqueeze(1).repeat(1, inject_index, 1),
                                second.unsqueeze(1).repeat(1, self.num_ws - inject_index, 1)], dim=1)
        return self.synthesize(w_plus, noise_mode=noise_mode, noise=noise, return_features=return_features,
                               rng=rng)
