"""Plain nn.Modules of GRAIN, in data-flow order (no Lightning, no file I/O)."""

from grain_pl.networks.config import PRESETS, GrainConfig, get_preset
from grain_pl.networks.grain import GRAIN, GrainOutput

__all__ = ["GRAIN", "GrainConfig", "GrainOutput", "PRESETS", "get_preset"]
