"""grain_pl: faithful extreme image rescaling (GRAIN, CVPR 2022) in PyTorch Lightning.

    import grain_pl
    grain = grain_pl.GRAIN("paper-1024-lr16")        # the official architecture
    out = grain(hr)                                   # GrainOutput: lr, y_inv, w_plus, prior_image, hr_out
"""

from grain_pl.networks import GRAIN, PRESETS, GrainConfig, GrainOutput, get_preset
from grain_pl.weights.grain_checkpoint import load_grain, load_prior_into, save_grain

__version__ = "0.1.0"

_LAZY = {  # Lightning-based names load on first use, so `import grain_pl` stays light
    "GrainModule": "grain_pl.codec",
    "GrainDataModule": "grain_pl.data",
    "Stage1": "grain_pl.stages",
    "Stage2": "grain_pl.stages",
    "Stage3": "grain_pl.stages",
    "FinalStage": "grain_pl.stages",
    "PriorStage": "grain_pl.stages",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grain_pl' has no attribute {name!r}")

__all__ = ["GRAIN", "FinalStage", "GrainConfig", "GrainDataModule", "GrainModule", "GrainOutput", "PRESETS",
           "PriorStage", "Stage1", "Stage2", "Stage3", "get_preset", "load_grain", "load_prior_into", "save_grain"]
