"""Stage 2: the latent-code bank of the Scale-Specific Generative Prior Module. The rescaling module is frozen;
the codes are trained through the frozen StyleGAN2, supervised on its image."""

from __future__ import annotations

import torch

from grain_pl.networks import GrainOutput
from grain_pl.stages.base import GrainStage


class Stage2(GrainStage):
    trainable_parts = ("latent_codes",)
    inherited_parts = ("encoder", "decoder")
    output_name = "prior_image"
    default_d_every = 5

    def generate(self, hr: torch.Tensor) -> GrainOutput:
        grain = self.grain
        with torch.no_grad():  # frozen: stage 1's rescaling module
            lr = grain.encode(hr)
            y_inv, decoder_features = self.frozen_decoder(self.decoder_input(lr))
        w_plus = grain.latent_codes(decoder_features)
        prior = grain.generator.synthesize(w_plus, noise_mode=grain.current_noise_mode)
        return GrainOutput(lr=lr, y_inv=y_inv, w_plus=w_plus, prior_image=prior.image)
