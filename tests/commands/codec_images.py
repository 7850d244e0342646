"""Test images for the codec command tests (tests/commands is on sys.path under pytest's default import mode)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def save_smooth_image(path, width: int = 32, height: int = 32, seed: int = 0):
    coarse = np.random.default_rng(seed).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(coarse).resize((width, height), Image.BICUBIC).save(path)
    return path
