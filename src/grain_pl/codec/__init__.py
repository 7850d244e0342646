"""The GRAIN codec: `GrainModule` (images -> tiny 8-bit LR PNGs -> images, module.py), the file jobs (jobs.py) and
the PNG format (png.py)."""

from grain_pl.codec.jobs import (
    RESIZE_POLICIES,
    CodecError,
    CodecReport,
    fit_image,
    open_rgb_image,
    plan_jobs,
    write_atomically,
)
from grain_pl.codec.module import GrainModule, LRImageDataset
from grain_pl.codec.png import lr_png_bytes, read_png_text

__all__ = ["RESIZE_POLICIES", "CodecError", "CodecReport", "GrainModule", "LRImageDataset", "fit_image",
           "lr_png_bytes", "open_rgb_image", "plan_jobs", "read_png_text", "write_atomically"]
