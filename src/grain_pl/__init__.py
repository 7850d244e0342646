"""grain_pl: faithful extreme image rescaling (GRAIN, CVPR 2022) in PyTorch Lightning.

    import grain_pl
    grain = grain_pl.GRAIN("paper-1024-lr16")        # the official architecture
    out = grain(hr)                                   # GrainOutput: lr, y_inv, w_plus, prior_image, hr_out
"""

from grain_pl.networks import GRAIN, PRESETS, GrainConfig, GrainOutput, get_preset
from grain_pl.weights.grain_checkpoint import load_grain, load_prior_into, save_grain

__version__ = "0.1.0"

__all__ = ["GRAIN", "GrainConfig", "GrainOutput", "PRESETS", "get_preset", "load_grain", "load_prior_into",
           "save_grain"]
