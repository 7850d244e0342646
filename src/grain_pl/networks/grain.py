"""GRAIN, wired as in the paper's Figure 2.

    hr -> encoder -> quantize -> lr -> decoder -> y_inv, decoder_features
       -> latent_codes -> w_plus -> StyleGAN2 (frozen prior) -> prior_image, prior_features
       -> fusion(decoder_features, prior_features) -> hr_out

Two opt-in parameterisations (GrainConfig; the paper's "free" by default) make the images corrections of the
classical ones: `lr_parameterisation="bicubic_residual"` (the encoder, see encoder.py) and
`hr_parameterisation="bicubic_residual"`: y_inv = bicubic_upscale(lr) + decoder head, hr_out = y_inv + fusion.
`encoder="bicubic"` replaces the encoder by the fixed bicubic downscale (an upscaler of ordinary thumbnails).

Plain nn.Modules only: no Lightning, no file I/O, no losses (see grain_pl.weights and grain_pl.stages).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from grain_pl.networks.checkpointing import set_checkpointing
from grain_pl.networks.config import GrainConfig, get_preset
from grain_pl.networks.decoder import Decoder
from grain_pl.networks.encoder import BicubicEncoder, Encoder
from grain_pl.networks.fusion import Fusion
from grain_pl.networks.inference import DecodeOptions, autocast_context, decoder_forward, fusion_forward
from grain_pl.networks.latent_codes import LatentCodeBank
from grain_pl.networks.quantize import Quantize
from grain_pl.networks.resize import antialiased_bicubic
from grain_pl.networks.stylegan2 import StyleGAN2Generator
from grain_pl.networks.training_memory import MemoryOptions

NOISE_MODES = ("auto", "random", "const", "zero")


@dataclass
class GrainOutput:
    """Every image of the data flow, in [-1, 1] (B, 3, H, W); features only when asked for."""

    lr: torch.Tensor
    y_inv: torch.Tensor
    w_plus: torch.Tensor | None = None
    prior_image: torch.Tensor | None = None
    hr_out: torch.Tensor | None = None
    decoder_features: dict[int, torch.Tensor] | None = None
    prior_features: dict[int, torch.Tensor] | None = None


def bicubic_upscale(lr: torch.Tensor, size: int) -> torch.Tensor:
    """The bicubic baseline's upscale (torch's bicubic, align_corners=False, antialias=True as the baseline passes
    it: torch then uses Pillow's cubic, a = -0.5, when enlarging too, where without it a = -0.75 would give up to
    0.18 different values at 16 -> 1024): the base of `hr_parameterisation="bicubic_residual"`."""
    return antialiased_bicubic(lr, size)


def check_image(image: torch.Tensor, size: int, name: str) -> None:
    """A ValueError naming the expected and the given shape, for HR and LR inputs."""
    if image.dim() != 4 or image.shape[1] != 3 or tuple(image.shape[2:]) != (size, size):
        raise ValueError(f"{name} must have shape (B, 3, {size}, {size}), got {tuple(image.shape)}")


class GRAIN(nn.Module):
    """The whole network. Parts, in data-flow order: `encoder`, `quantize`, `decoder`, `latent_codes`,
    `generator` (frozen), `fusion`.

    prior_noise: the StyleGAN2 noise inputs. "auto" draws fresh noise in training (as the official code) and
    uses the generator's fixed noise buffers in eval mode, so decoding is deterministic.
    decode_options: how `decode` runs without autograd (grain_pl.networks.inference; `DecodeOptions.baseline()`
    is the modules' own forward). With autograd on, the modules' forward always runs.
    memory_options: how the forward keeps memory down with autograd on (grain_pl.networks.training_memory;
    `MemoryOptions.baseline()`: every activation kept; `set_memory_options` changes it).
    """

    def __init__(self, config: GrainConfig | str = "paper-1024-lr16", prior_noise: str = "auto",
                 quantize_noise_at_eval: bool = False, checkpointing: bool = False,
                 decode_options: DecodeOptions | None = None, memory_options: MemoryOptions | None = None) -> None:
        super().__init__()
        self.decode_options = decode_options if decode_options is not None else DecodeOptions()
        if prior_noise not in NOISE_MODES:
            raise ValueError(f"prior_noise must be one of {NOISE_MODES}, got {prior_noise!r}")
        self.config = get_preset(config) if isinstance(config, str) else config
        self.prior_noise = prior_noise
        cfg = self.config

        # Invertible Extreme Rescaling Module
        if cfg.encoder == "bicubic":
            self.encoder: nn.Module = BicubicEncoder(cfg.lr_size)
        else:
            self.encoder = Encoder(cfg.num_downsamples, cfg.channels, cfg.growth_channels, cfg.encoder_blocks,
                                   lr_parameterisation=cfg.lr_parameterisation)
        self.quantize = Quantize(noise_at_eval=quantize_noise_at_eval)
        light = {r for r in cfg.decoder_resolutions if cfg.uses_light_blocks(r)}
        self.decoder = Decoder(cfg.decoder_resolutions, cfg.blocks_per_scale, light, cfg.channels,
                               cfg.growth_channels)
        # Scale-Specific Generative Prior Module
        self.latent_codes = LatentCodeBank(cfg.num_ws, cfg.decoder_resolutions, cfg.channels, cfg.style_dim,
                                           cfg.code_head_size)
        self.generator = StyleGAN2Generator(cfg.hr_size, style_dim=cfg.style_dim, n_mlp=cfg.mapping_layers,
                                            channel_multiplier=cfg.channel_multiplier,
                                            channel_max=cfg.generator_channel_max)
        self.generator.requires_grad_(False)  # the pretrained prior is never trained
        # Upscaling Priors Decoding Module
        self.fusion = Fusion(cfg.fusion_resolutions, cfg.channels,
                             {r: cfg.generator_channels(r) for r in cfg.fusion_resolutions},
                             cfg.fusion_channels, cfg.fusion_head_channels, cfg.se_reduction)
        if cfg.hr_parameterisation == "bicubic_residual":
            # Zero corrections to start with: an untrained network decodes as bicubic upscaling does, and a fresh
            # fusion returns y_inv as it is; the state dict keeps the paper's keys and shapes.
            for head in (self.decoder.to_hr[-1], self.fusion.head[-1]):
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        self.set_checkpointing(checkpointing)
        self.set_memory_options(memory_options if memory_options is not None else MemoryOptions())

    # ----- the data flow -----
    def forward(self, hr: torch.Tensor, return_features: bool = False) -> GrainOutput:
        check_image(hr, self.config.hr_size, "hr")
        lr = self.encode(hr)  # 1. encoder + 2. quantizer
        return self.decode(lr, return_features=return_features)

    def encode(self, hr: torch.Tensor) -> torch.Tensor:
        """HR -> the 8-bit-valued LR image (noisy quantization in training mode; the fixed bicubic encoder's
        thumbnail is 8-bit already, in every mode)."""
        check_image(hr, self.config.hr_size, "hr")
        if self.config.encoder == "bicubic":
            return self.encoder(hr)
        return self.quantize(self.encoder(hr))

    def rescale(self, hr: torch.Tensor) -> GrainOutput:
        """Stage 1's path only: HR -> LR -> y_inv (no prior, no fusion)."""
        lr = self.encode(hr)
        y_inv, decoder_features = self.upscale(lr)
        return GrainOutput(lr=lr, y_inv=y_inv, decoder_features=decoder_features)

    def upscale(self, lr: torch.Tensor) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """3. the decoder: LR -> y_inv (the decoder's head, plus the LR's bicubic upscale under
        hr_parameterisation="bicubic_residual") and its feature map at every scale."""
        y_inv, decoder_features = self.decoder(lr)
        return self._add_upscale(y_inv, lr), decoder_features

    def fuse(self, decoder_features: dict[int, torch.Tensor], prior_features: dict[int, torch.Tensor],
             y_inv: torch.Tensor) -> torch.Tensor:
        """6. fusion of decoder and prior features -> the final HR image (under hr_parameterisation=
        "bicubic_residual" the fusion's output refines y_inv, so stage 3 starts from stage 1's result)."""
        return self._add_refinement(self.fusion(decoder_features, prior_features), y_inv)

    def decode(self, lr: torch.Tensor, return_features: bool = False) -> GrainOutput:
        check_image(lr, self.config.lr_size, "lr")
        options = self.decode_options
        if options.enabled and not torch.is_grad_enabled():
            with autocast_context(options, lr.device):
                return self._decode_inference(lr, options, return_features)
        # 3. decoder: LR -> y_inv and a feature map at every scale
        y_inv, decoder_features = self.upscale(lr)
        # 4. latent-code bank: decoder features -> W+
        w_plus = self.latent_codes(decoder_features)
        # 5. frozen StyleGAN2: W+ -> prior image and its features
        prior = self.generator.synthesize(w_plus, noise_mode=self.current_noise_mode, return_features=True)
        # 6. fusion of decoder and prior features -> final HR image
        hr_out = self.fuse(decoder_features, prior.features, y_inv)
        return GrainOutput(
            lr=lr, y_inv=y_inv, w_plus=w_plus, prior_image=prior.image, hr_out=hr_out,
            decoder_features=decoder_features if return_features else None,
            prior_features=prior.features if return_features else None,
        )

    def _decode_inference(self, lr: torch.Tensor, options: DecodeOptions, return_features: bool) -> GrainOutput:
        """`decode` without autograd, through grain_pl.networks.inference (same data flow, same results up to
        float summation order unless `options.bf16`)."""
        y_inv, decoder_features = decoder_forward(self.decoder, lr, options)
        y_inv = self._add_upscale(y_inv.float().contiguous(), lr)
        w_plus = self.latent_codes(decoder_features)
        prior = self.generator.synthesize(w_plus, noise_mode=self.current_noise_mode, return_features=True)
        hr_out = fusion_forward(self.fusion, decoder_features, prior.features, options).float().contiguous()
        if not return_features:
            decoder_features = prior_features = None  # free them before the residual below
        else:
            prior_features = prior.features
        hr_out = self._add_refinement(hr_out, y_inv)
        return GrainOutput(lr=lr, y_inv=y_inv, w_plus=w_plus, prior_image=prior.image.float(), hr_out=hr_out,
                           decoder_features=decoder_features, prior_features=prior_features)

    def _add_upscale(self, y_inv: torch.Tensor, lr: torch.Tensor) -> torch.Tensor:
        if self.config.hr_parameterisation == "bicubic_residual":
            return y_inv + bicubic_upscale(lr, self.config.hr_size)
        return y_inv

    def _add_refinement(self, fused: torch.Tensor, y_inv: torch.Tensor) -> torch.Tensor:
        if self.config.hr_parameterisation == "bicubic_residual":
            return fused + y_inv
        return fused

    # ----- settings -----
    @property
    def current_noise_mode(self) -> str:
        if self.prior_noise == "auto":
            return "random" if self.training else "const"
        return self.prior_noise

    def set_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing of the encoder, decoder and fusion (memory for one more forward pass)."""
        set_checkpointing(self, enabled)

    def set_memory_options(self, options: MemoryOptions) -> None:
        """The training-memory levers of the parts (`y_inv_graph` is the stages' to apply: only they know whether
        a loss reads y_inv)."""
        self.memory_options = options
        self.fusion.parts = options.fusion_parts
        self.fusion.head_strips = options.head_strips
        self.fusion.polyphase = options.polyphase
        self.generator.checkpoint_min_size = options.generator_checkpoint_size
        self.encoder.checkpoint_downsample = options.encoder_checkpoint
        self.decoder.checkpoint_min_size = options.decoder_checkpoint_size

    def train(self, mode: bool = True) -> GRAIN:
        super().train(mode)
        self.generator.eval()  # frozen prior: always in eval mode
        return self

    @torch.no_grad()
    def set_latent_avg(self, latent_avg: torch.Tensor) -> None:
        self.latent_codes.latent_avg.copy_(latent_avg.reshape(-1))

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder, "latent_codes": self.latent_codes,
                "generator": self.generator, "fusion": self.fusion}
