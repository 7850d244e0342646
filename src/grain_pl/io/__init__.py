"""Pixels and files: the one mapping between image tensors and 8-bit pixels, and atomic file writes."""

from grain_pl.io.images import LEVELS, from_uint8, to_uint8

__all__ = ["LEVELS", "from_uint8", "to_uint8"]
