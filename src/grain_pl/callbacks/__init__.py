"""Callbacks: chaining stages and logging sample grids."""

from grain_pl.callbacks.image_logger import LogImageGrid
from grain_pl.callbacks.stage_init import InitFromStage

__all__ = ["InitFromStage", "LogImageGrid"]
