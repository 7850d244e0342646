"""The GRAIN codec: `GrainModule` (images -> tiny 8-bit LR PNGs -> images), the file jobs and the PNG format."""

from grain_pl.codec.module import (
    RESIZE_POLICIES,
    CodecError,
    CodecReport,
    GrainModule,
    LRImageDataset,
    fit_image,
    lr_png_bytes,
    open_rgb_image,
    plan_jobs,
    read_png_text,
    write_atomically,
)

__all__ = ["RESIZE_POLICIES", "CodecError", "CodecReport", "GrainModule", "LRImageDataset", "fit_image",
           "lr_png_bytes", "open_rgb_image", "plan_jobs", "read_png_text", "write_atomically"]
