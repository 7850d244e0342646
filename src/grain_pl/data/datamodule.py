"""GrainDataModule: an image folder -> train / val / test loaders of {"hr": (B, 3, S, S) in [-1, 1], "path": [str]}."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch.utils.data import DataLoader

from grain_pl.data.datasets import (
    BadFilePolicy,
    FileCheck,
    ImageFolderDataset,
    ResizePolicy,
    find_bad_image_files,
    warn_about_skipped_files,
)
from grain_pl.data.sampling import ResumableDataLoader, ResumableSampler
from grain_pl.data.splits import DatasetSplit, celeba_hq_split, folder_split, read_split_file
from grain_pl.io.images import describe_skipped, no_images_error, scan_image_files

__all__ = ["GrainDataModule"]

SplitKind = Literal["celeba_hq", "folder", "file"]


class GrainDataModule(pl.LightningDataModule):
    """Image folder data for every GRAIN stage (the HR image is both the encoder input and the target).

    Args:
        data_dir: folder searched recursively for jpg/jpeg/png/ppm/bmp/tif/tiff/webp files (any case).
        image_size: HR side length in pixels (1024 for CelebA-HQ, 256 for Cat and LSUN Church).
        split: how images are divided into train / val / test:
            "celeba_hq": the paper split (24,183 train / 5,817 test) from `celeba_partition_file` and
            `celeba_hq_mapping_file`; "folder": seeded random split by `val_fraction` / `test_fraction`;
            "file": the lines of `split_file` (format in `grain_pl.data.splits`).
        split_file: split file for split="file"; relative paths inside it are relative to `data_dir`.
        celeba_partition_file: CelebA's `list_eval_partition.txt` (split="celeba_hq").
        celeba_hq_mapping_file: `CelebA-HQ-to-CelebA-mapping.txt` (split="celeba_hq").
        val_fraction: share of all images held out for validation, taken from the training side. 0 (default)
            validates on the test images, as the official code does; combine with `Trainer(limit_val_batches=51)`
            to mirror its "first 51 test batches".
        test_fraction: share of all images held out for test (split="folder" only).
        seed: seed of the random holdouts (a hash of seed and relative path: the same on every run and machine).
        resize: policy for images whose size is not image_size x image_size: "error", "resize" (stretch,
            bilinear + antialias; the official behaviour), "center_crop" or "random_crop" (shorter side scaled to
            image_size, then a centre / random square). "random_crop" applies to training only; val and test use
            the centre crop. Images already at the target size are never resampled.
        hflip: random horizontal flips of training images (the official code has no augmentation).
        on_bad_file: "skip" leaves unreadable files out with one warning (count and first paths);
            "error" raises a ValueError naming the file.
        check_files: when to look for unreadable files: "header" (default) opens every file at setup and reads
            its header (cheap; finds empty, non-image and cut-header files), "decode" decodes every file at setup
            (finds truncated pixel data too; one full pass over the data), "none" only at load time. Whatever
            slips through is handled at load time: under "skip" the next readable file takes its place.
        batch_size: training batch size (the official code uses 1 at 1024 px). The train loader shuffles (each
            epoch's order from the global seed and the epoch, so a resumed run continues its epoch; see
            `grain_pl.data.sampling`) and drops the last incomplete batch.
        val_batch_size: batch size for val, test and predict; None means `batch_size`.
        num_workers: DataLoader worker processes.
        pin_memory: pin host memory (only when CUDA is available).
        persistent_workers: keep workers alive between epochs (only when num_workers > 0).
    """

    def __init__(
        self,
        data_dir: str = "data",
        image_size: int = 1024,
        split: SplitKind = "folder",
        split_file: str | None = None,
        celeba_partition_file: str | None = None,
        celeba_hq_mapping_file: str | None = None,
        val_fraction: float = 0.0,
        test_fraction: float = 0.1,
        seed: int = 0,
        resize: ResizePolicy = "resize",
        hflip: bool = False,
        on_bad_file: BadFilePolicy = "skip",
        check_files: FileCheck = "header",
        batch_size: int = 1,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = True,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__()
        # Fail on bad settings now, before any file is touched.
        if split not in ("celeba_hq", "folder", "file"):
            raise ValueError(f"split must be 'celeba_hq', 'folder' or 'file', got {split!r}")
        if split == "file" and split_file is None:
            raise ValueError("split='file' needs split_file")
        if split == "celeba_hq" and (celeba_partition_file is None or celeba_hq_mapping_file is None):
            raise ValueError("split='celeba_hq' needs celeba_partition_file and celeba_hq_mapping_file")
        if on_bad_file not in ("skip", "error"):
            raise ValueError(f"on_bad_file must be 'skip' or 'error', got {on_bad_file!r}")
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got {batch_size} and {val_batch_size}")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir).expanduser()
        self.image_size = image_size
        self.split_kind = split
        self.split_file = split_file
        self.celeba_partition_file = celeba_partition_file
        self.celeba_hq_mapping_file = celeba_hq_mapping_file
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.seed = seed
        self.resize = resize
        self.hflip = hflip
        self.on_bad_file = on_bad_file
        self.check_files = check_files
        self.batch_size = batch_size
        self.val_batch_size = batch_size if val_batch_size is None else val_batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers

        self.data_split: DatasetSplit | None = None  # readable files only, filled by setup()
        self.bad_files: dict[str, str] = {}  # unreadable files found at setup: {path: reason}
        self.unlisted: list[tuple[Path, str]] = []  # entries the folder listing left out: (path, reason)
        self.train_dataset: ImageFolderDataset | None = None
        self.val_dataset: ImageFolderDataset | None = None
        self.test_dataset: ImageFolderDataset | None = None

    # ----------------------------------------------------------------------------------------------------------
    # Setup
    # ----------------------------------------------------------------------------------------------------------

    def build_split(self) -> DatasetSplit:
        """List the folder and split it (all files, readable or not, so bad files never move good ones)."""
        if self.split_kind == "file":
            return read_split_file(self.split_file, self.data_dir, val_fraction=self.val_fraction, seed=self.seed)
        listing = scan_image_files(self.data_dir)
        if not listing.files:
            raise no_images_error(listing)
        self.unlisted = listing.skipped
        if listing.skipped:
            rank_zero_warn(f"GrainDataModule: {self.data_dir}: {listing.summary()}")
        paths = listing.files
        if self.split_kind == "celeba_hq":
            return celeba_hq_split(
                paths,
                self.data_dir,
                partition_file=self.celeba_partition_file,
                mapping_file=self.celeba_hq_mapping_file,
                val_fraction=self.val_fraction,
                seed=self.seed,
            )
        return folder_split(
            paths, self.data_dir, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed
        )

    def setup(self, stage: str | None = None) -> None:
        if self.data_split is None:
            self.data_split = self._drop_bad_files(self.build_split())
            sizes = self.data_split.sizes()
            validation = f"{sizes['val']} val" if sizes["val"] else "validation on test"
            unlisted = f"; {describe_skipped(self.unlisted)}" if self.unlisted else ""
            rank_zero_info(
                f"GrainDataModule: {self.data_dir} split '{self.split_kind}': {sizes['train']} train, "
                f"{sizes['test']} test images, {validation}{unlisted}"
            )
        split = self.data_split
        if stage in (None, "fit"):
            if len(split.train) < self.batch_size:
                raise ValueError(
                    f"the train split has {len(split.train)} images, fewer than batch_size={self.batch_size}; "
                    "the train loader drops incomplete batches, so it would yield nothing"
                )
            # Random crops and flips are for training only; evaluation stays deterministic.
            self.train_dataset = self._dataset(split.train, self.resize, self.hflip)
        if stage in (None, "fit", "validate"):
            self.val_dataset = self._dataset(split.val or split.test, self._eval_resize(), hflip=False)
        if stage in (None, "test", "predict"):
            self.test_dataset = self._dataset(split.test, self._eval_resize(), hflip=False)

    def _drop_bad_files(self, split: DatasetSplit) -> DatasetSplit:
        all_paths = [*split.train, *split.val, *split.test]
        self.bad_files = find_bad_image_files(all_paths, self.check_files, num_threads=max(1, self.num_workers))
        if not self.bad_files:
            return split
        if self.on_bad_file == "error":
            path, reason = next(iter(self.bad_files.items()))
            raise ValueError(
                f"cannot read image file {path}: {reason}"
                + (f" (and {len(self.bad_files) - 1} more unreadable files)" if len(self.bad_files) > 1 else "")
            )
        warn_about_skipped_files(self.bad_files)
        return split.without(self.bad_files)

    def _eval_resize(self) -> ResizePolicy:
        return "center_crop" if self.resize == "random_crop" else self.resize

    def _dataset(self, paths: tuple[Path, ...], resize: ResizePolicy, hflip: bool) -> ImageFolderDataset:
        return ImageFolderDataset(paths, self.image_size, resize=resize, hflip=hflip, on_bad_file=self.on_bad_file)

    # ----------------------------------------------------------------------------------------------------------
    # Loaders
    # ----------------------------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.train_dataset, "fit"), self.batch_size, train=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_dataset is not None and len(self.val_dataset) == 0:
            # No val and no test images (both fractions 0): train without validation rather than fail.
            rank_zero_warn("GrainDataModule has no validation images (val_fraction=0 and no test images); skipping")
            return []
        return self._loader(self._require(self.val_dataset, "validate"), self.val_batch_size, train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_dataset, "test"), self.val_batch_size, train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self._require(self.test_dataset, "predict"), self.val_batch_size, train=False)

    @staticmethod
    def _require(dataset: ImageFolderDataset | None, stage: str) -> ImageFolderDataset:
        if dataset is None:
            raise RuntimeError(f"call setup('{stage}') before asking for this loader")
        if len(dataset) == 0:
            raise ValueError(f"the {stage} split has no images; adjust test_fraction or the split file")
        return dataset

    def _loader(self, dataset: ImageFolderDataset, batch_size: int, train: bool) -> DataLoader:
        # The official loop draws shuffled batches with drop_last; evaluation keeps the listing order. The shuffle
        # comes from ResumableSampler so that a run resumed mid-epoch continues that epoch's order.
        sampler = ResumableSampler.for_trainer(dataset, batch_size, self.trainer) if train else None
        return (ResumableDataLoader if train else DataLoader)(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            persistent_workers=self.persistent_workers and self.num_workers > 0,
        )
