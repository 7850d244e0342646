"""grain_pl: faithful extreme image rescaling (GRAIN, CVPR 2022) in PyTorch Lightning.

    import grain_pl
    grain = grain_pl.GRAIN("paper-1024-lr16")        # the official architecture
    out = grain(hr)                                   # GrainOutput: lr, y_inv, w_plus, prior_image, hr_out
    codec = grain_pl.GrainModule.from_checkpoint("grain.safetensors")   # images <-> 16x16 PNGs

The package, one folder per concern: networks/ (plain nn.Modules, in data-flow order), losses/, metrics/,
weights/ (every file format), data/ (datasets, splits, face alignment), stages/ (one LightningModule per
training stage), training/ (callbacks, loggers, checkpoint files, optimizers), codec/ (GrainModule and its
files), evaluation/ (the metric protocol), io/ (pixels and atomic writes), commands/ (the `grain` command).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from grain_pl.threads import apply_thread_policy

apply_thread_policy()  # before torch is imported: OpenMP reads its wait policy once (grain_pl/threads.py)

from grain_pl.networks import GRAIN, PRESETS, GrainConfig, GrainOutput, get_preset  # noqa: E402
from grain_pl.weights.grain_checkpoint import load_grain, load_prior_into, save_grain  # noqa: E402

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

# Modules of grain_pl 0.1.0's first layout -> where they live now. Importing an old name still works (it is the
# same module object) and warns once, so notebooks and configs written against the old layout keep running.
MOVED_MODULES = {
    "grain_pl.callbacks": "grain_pl.training",
    "grain_pl.checkpoint_io": "grain_pl.training.checkpoint_io",
    "grain_pl.cli": "grain_pl.commands",
    "grain_pl.codec_cli": "grain_pl.commands.codec",
    "grain_pl.demo": "grain_pl.commands.demo",
    "grain_pl.evaluation_cli": "grain_pl.commands.evaluate",
    "grain_pl.faces": "grain_pl.data.faces",
    "grain_pl.faces_cli": "grain_pl.commands.prepare",
    "grain_pl.images": "grain_pl.io.images",
    "grain_pl.loggers": "grain_pl.training.loggers",
    "grain_pl.optim": "grain_pl.training.optim",
    "grain_pl.stages.finetune": "grain_pl.stages.final",
    "grain_pl.stages.generative_prior": "grain_pl.stages.stage2",
    "grain_pl.stages.prior_decoding": "grain_pl.stages.stage3",
    "grain_pl.stages.rescaling": "grain_pl.stages.stage1",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves an old module name (MOVED_MODULES) to the module at its new place."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new_name = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new_name}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new_name)

    def exec_module(self, module) -> None:  # the new module is already executed
        pass


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'grain_pl' has no attribute {name!r}")


__all__ = ["GRAIN", "FinalStage", "GrainConfig", "GrainDataModule", "GrainModule", "GrainOutput", "PRESETS",
           "PriorStage", "Stage1", "Stage2", "Stage3", "get_preset", "load_grain", "load_prior_into", "save_grain"]
