"""Plain-PyTorch StyleGAN2 (rosinality's key layout and numerics): the frozen prior of GRAIN and its discriminator."""

from grain_pl.networks.stylegan2.discriminator import StyleGAN2Discriminator
from grain_pl.networks.stylegan2.generator import NOISE_MODES, NoiseMode, StyleGAN2Generator, SynthesisOutput
from grain_pl.networks.stylegan2.layers import stylegan2_channels
from grain_pl.networks.stylegan2.ops import FusedLeakyReLU, fused_leaky_relu, make_kernel, upfirdn2d

__all__ = [
    "NOISE_MODES",
    "FusedLeakyReLU",
    "NoiseMode",
    "StyleGAN2Discriminator",
    "StyleGAN2Generator",
    "SynthesisOutput",
    "fused_leaky_relu",
    "make_kernel",
    "stylegan2_channels",
    "upfirdn2d",
]
