"""Data: image folders -> HR tensors in [-1, 1], the dataset splits, and the LightningDataModule."""

from __future__ import annotations

from grain_pl.data.datamodule import GrainDataModule
from grain_pl.data.datasets import (
    IMAGE_EXTENSIONS,
    RESIZE_POLICIES,
    BadImageFileError,
    ImageFolderDataset,
    find_bad_image_files,
    list_image_files,
    load_rgb_image,
)
from grain_pl.data.sampling import ResumableDataLoader, ResumableSampler
from grain_pl.data.splits import (
    CELEBA_HQ_PAPER_SPLIT_SIZES,
    DatasetSplit,
    celeba_hq_split,
    folder_split,
    read_split_file,
    write_split_file,
)

__all__ = [
    "CELEBA_HQ_PAPER_SPLIT_SIZES",
    "IMAGE_EXTENSIONS",
    "RESIZE_POLICIES",
    "BadImageFileError",
    "DatasetSplit",
    "GrainDataModule",
    "ImageFolderDataset",
    "ResumableDataLoader",
    "ResumableSampler",
    "celeba_hq_split",
    "find_bad_image_files",
    "folder_split",
    "list_image_files",
    "load_rgb_image",
    "read_split_file",
    "write_split_file",
]
