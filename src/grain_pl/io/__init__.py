"""Pixels and files: images <-> tensors (`grain_pl.io.images`) and atomic file writes (`grain_pl.io.files`)."""

from grain_pl.io.images import LEVELS, from_uint8, to_uint8

__all__ = ["LEVELS", "from_uint8", "to_uint8"]
