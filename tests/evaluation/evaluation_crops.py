"""The evaluation tests' images: 32 x 32 crops of scikit-image's astronaut, written as PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage.data import astronaut


def write_astronaut_crops(folder: Path, crops: dict[str, tuple[int, int]]) -> Path:
    """Each `name: (top, left)` as a 32 x 32 crop at `folder / name` (sub-folders made); returns `folder`."""
    for name, (top, left) in crops.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(astronaut()[top:top + 32, left:left + 32])).save(folder / name)
    return folder
