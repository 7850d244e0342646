"""Final stage: encoder, decoder, latent codes and fusion fine-tuned end to end (the prior stays frozen), at
half the learning rate, supervised on the final image and the LR."""

from __future__ import annotations

import torch

from grain_pl.networks import GrainOutput
from grain_pl.stages.base import GrainStage


class FinalStage(GrainStage):
    trainable_parts = ("encoder", "decoder", "latent_codes", "fusion")
    inherited_parts = ("encoder", "decoder", "latent_codes", "fusion")
    output_name = "hr_out"
    default_d_every = 3
    default_lr_weight = 0.1
    default_learning_rate = 5e-5

    def freeze_unused(self) -> None:
        # The last W+ code feeds only StyleGAN2's final ToRGB, i.e. the prior image, which this stage does not
        # supervise: its head gets no gradient (as in the official code). Freezing it says so, and keeps DDP from
        # waiting for gradients that never come.
        last_block = self.grain.latent_codes.blocks[-1]
        last_block.odd_convs.requires_grad_(False)
        last_block.odd_linear.requires_grad_(False)
        # Likewise the decoder's y_inv head: only stage 1 supervises y_inv.
        self.grain.decoder.to_hr.requires_grad_(False)

    def generate(self, hr: torch.Tensor) -> GrainOutput:
        # grain(hr), with the decoder given `decoder_input(lr)`; the output keeps the stored LR, which the LR
        # guidance and the LR fidelity read
        lr = self.grain.encode(hr)
        out = self.grain.decode(self.decoder_input(lr))
        out.lr = lr
        return out
