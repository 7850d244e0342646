"""Stage 3: the Upscaling Priors Decoding Module (fusion). Everything before it is frozen."""

from __future__ import annotations

import torch

from grain_pl.networks import GrainOutput
from grain_pl.stages.base import GrainStage


class Stage3(GrainStage):
    trainable_parts = ("fusion",)
    inherited_parts = ("encoder", "decoder", "latent_codes")
    output_name = "hr_out"
    default_d_every = 3

    def generate(self, hr: torch.Tensor) -> GrainOutput:
        grain = self.grain
        with torch.no_grad():  # frozen: rescaling module, latent codes and the prior
            lr = grain.encode(hr)
            y_inv, decoder_features = self.frozen_decoder(self.decoder_input(lr))
            w_plus = grain.latent_codes(decoder_features)
            prior = grain.generator.synthesize(w_plus, noise_mode=grain.current_noise_mode, return_features=True)
        hr_out = grain.fuse(decoder_features, prior.features, y_inv)
        return GrainOutput(lr=lr, y_inv=y_inv, w_plus=w_plus, prior_image=prior.image, hr_out=hr_out)
