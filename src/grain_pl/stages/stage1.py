"""Stage 1: the Invertible Extreme Rescaling Module (encoder + quantizer + decoder), supervised on y_inv and on
the LR (against the bilinearly downsampled HR), with a relativistic GAN and a patch discriminator."""

from __future__ import annotations

import torch

from grain_pl.networks import GrainOutput
from grain_pl.stages.base import GrainStage


class Stage1(GrainStage):
    trainable_parts = ("encoder", "decoder")
    inherited_parts = ()
    output_name = "y_inv"
    needs_prior = False  # the prior is not used before stage 2
    default_adversarial = "ragan"
    default_d_every = 6
    default_lr_weight = 0.1
    default_r1_gamma = 0.0  # the official stage 1 has no R1

    def generate(self, hr: torch.Tensor) -> GrainOutput:
        # grain.rescale(hr), with the decoder given `decoder_input(lr)` (the LR itself unless lr_jpeg is set)
        lr = self.grain.encode(hr)
        y_inv, decoder_features = self.grain.upscale(self.decoder_input(lr))
        return GrainOutput(lr=lr, y_inv=y_inv, decoder_features=decoder_features)
