"""GrainDataModule: setup, loaders, bad-file policies, the three split kinds, Trainer and YAML config compatibility."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image

from grain_pl.data import GrainDataModule

IMAGE_SIZE = 16


def _make_folder(root: Path, count: int, sizes: tuple[tuple[int, int], ...] = ((16, 16), (24, 20))) -> Path:
    rng = np.random.default_rng(0)
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        (root / f"part{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / f"part{index % 2}" / f"{index:03d}.png")
    return root


@pytest.fixture
def folder_with_bad_file(tmp_path: Path) -> Path:
    root = _make_folder(tmp_path / "images", 12)
    (root / "part0" / "broken.png").write_bytes(b"")
    (root / "part1" / "readme.txt").write_text("ignored")
    return root


def _skip_warnings(record: list[warnings.WarningMessage]) -> list[str]:
    return [str(item.message) for item in record if "unreadable" in str(item.message)]


def test_setup_and_batches_from_train_and_val(folder_with_bad_file: Path) -> None:
    data = GrainDataModule(
        data_dir=str(folder_with_bad_file), image_size=IMAGE_SIZE, test_fraction=0.25, batch_size=4, num_workers=0
    )
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data.setup("fit")
    messages = _skip_warnings(record)
    assert len(messages) == 1 and "skipping 1 unreadable" in messages[0] and "broken.png" in messages[0]
    assert data.data_split.sizes() == {"train": 9, "val": 0, "test": 3}  # 13 listed, broken one dropped

    train_loader = data.train_dataloader()
    assert len(train_loader) == 9 // 4  # drop_last
    batch = next(iter(train_loader))
    assert batch["hr"].shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE) and batch["hr"].dtype == torch.float32
    assert -1.0 <= batch["hr"].min() and batch["hr"].max() <= 1.0
    assert len(batch["path"]) == 4 and all(isinstance(path, str) for path in batch["path"])

    # With val_fraction 0, validation runs on the test images, in listing order.
    val_batch = next(iter(data.val_dataloader()))
    assert val_batch["hr"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert val_batch["path"] == [str(path) for path in data.data_split.test]


def test_error_mode_names_the_bad_file(folder_with_bad_file: Path) -> None:
    data = GrainDataModule(data_dir=str(folder_with_bad_file), image_size=IMAGE_SIZE, on_bad_file="error")
    with pytest.raises(ValueError, match="broken.png"):
        data.setup("fit")


def test_resize_error_policy_reaches_the_loader(tmp_path: Path) -> None:
    root = _make_folder(tmp_path, 4, sizes=((24, 20),))
    data = GrainDataModule(
        data_dir=str(root), image_size=IMAGE_SIZE, resize="error", test_fraction=0.25, batch_size=1, num_workers=0
    )
    data.setup("test")
    with pytest.raises(ValueError, match=r"\.png has size 24x20 .*expected 16x16"):
        next(iter(data.test_dataloader()))


def test_val_fraction_and_random_crop_with_worker_process(tmp_path: Path) -> None:
    root = _make_folder(tmp_path, 10, sizes=((20, 16),))
    data = GrainDataModule(
        data_dir=str(root),
        image_size=IMAGE_SIZE,
        val_fraction=0.2,
        test_fraction=0.2,
        resize="random_crop",
        hflip=True,
        batch_size=2,
        val_batch_size=1,
        num_workers=1,
        persistent_workers=True,
    )
    data.setup()
    assert data.data_split.sizes() == {"train": 6, "val": 2, "test": 2}
    assert data.val_dataset.resize == "center_crop" and not data.val_dataset.hflip  # evaluation is deterministic
    assert next(iter(data.train_dataloader()))["hr"].shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert next(iter(data.val_dataloader()))["hr"].shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert len(data.test_dataloader()) == 2


def test_celeba_hq_and_file_splits(tmp_path: Path) -> None:
    root = tmp_path / "CelebA-HQ-img"
    root.mkdir()
    originals = {0: ("000010.jpg", 0), 1: ("000020.jpg", 2), 2: ("000030.jpg", 0), 3: ("000040.jpg", 1)}
    for index in originals:
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE)).save(root / f"{index:05d}.png")
    mapping = tmp_path / "CelebA-HQ-to-CelebA-mapping.txt"
    mapping.write_text(
        "idx orig_idx orig_file\n" + "".join(f"{i} {int(o[:-4]) - 1} {o}\n" for i, (o, _) in originals.items())
    )
    partition = tmp_path / "list_eval_partition.txt"
    partition.write_text("".join(f"{orig} {part}\n" for orig, part in originals.values()))

    celeba = GrainDataModule(
        data_dir=str(root),
        image_size=IMAGE_SIZE,
        split="celeba_hq",
        celeba_partition_file=str(partition),
        celeba_hq_mapping_file=str(mapping),
        batch_size=2,
        num_workers=0,
    )
    celeba.setup("fit")
    assert [path.name for path in celeba.data_split.train] == ["00000.png", "00002.png"]
    assert [path.name for path in celeba.data_split.test] == ["00001.png", "00003.png"]

    split_file = tmp_path / "split.txt"
    split_file.write_text("train 00000.png\ntrain 00003.png\ntest 00002.png\n")
    from_file = GrainDataModule(
        data_dir=str(root), image_size=IMAGE_SIZE, split="file", split_file=str(split_file), num_workers=0
    )
    from_file.setup("test")
    assert [path.name for path in from_file.data_split.test] == ["00002.png"]

    with pytest.raises(ValueError, match="needs celeba_partition_file"):
        GrainDataModule(data_dir=str(root), split="celeba_hq")
    with pytest.raises(ValueError, match="needs split_file"):
        GrainDataModule(data_dir=str(root), split="file")


def test_no_validation_images_skips_validation_with_a_warning(tmp_path: Path) -> None:
    data = GrainDataModule(data_dir=str(_make_folder(tmp_path, 4)), image_size=IMAGE_SIZE, test_fraction=0.0)
    data.setup("fit")
    with pytest.warns(UserWarning, match="no validation images"):
        assert data.val_dataloader() == []
    with pytest.raises(ValueError, match="test split has no images"):
        data.setup("test")
        data.test_dataloader()


def test_too_few_training_images_for_one_batch(tmp_path: Path) -> None:
    root = _make_folder(tmp_path, 4)
    data = GrainDataModule(data_dir=str(root), image_size=IMAGE_SIZE, test_fraction=0.25, batch_size=8)
    with pytest.raises(ValueError, match="3 images, fewer than batch_size=8"):
        data.setup("fit")


class _MeanModel(pl.LightningModule):
    """Smallest module that consumes batch["hr"] in training and validation."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return (batch["hr"] * self.scale).square().mean()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.log("val/mean", batch["hr"].mean(), batch_size=batch["hr"].shape[0])

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_trainer_fast_dev_run(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "images", 8)
    data = GrainDataModule(data_dir=str(root), image_size=IMAGE_SIZE, test_fraction=0.25, batch_size=2, num_workers=0)
    trainer = pl.Trainer(
        fast_dev_run=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_MeanModel(), datamodule=data)
    assert trainer.state.finished
    assert data.hparams.image_size == IMAGE_SIZE  # save_hyperparameters lets loggers record the data settings


def test_configurable_from_yaml(tmp_path: Path) -> None:
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(GrainDataModule, "data")
    config = parser.parse_string(
        f"data:\n  data_dir: {tmp_path}\n  image_size: 256\n  resize: center_crop\n  split: folder\n  seed: 3\n"
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes  # renamed in jsonargparse 4.49
    data = instantiate(config).data
    assert isinstance(data, GrainDataModule) and data.resize == "center_crop" and data.seed == 3
    with pytest.raises(ArgumentError, match="resize"):  # Literal choices are validated by the parser
        parser.parse_string("data:\n  resize: stretch\n")


def test_the_listing_follows_linked_folders_and_reports_what_it_skipped(tmp_path: Path) -> None:
    root = _make_folder(tmp_path / "images", 4, sizes=((16, 16),))
    elsewhere = _make_folder(tmp_path / "elsewhere", 2, sizes=((16, 16),))
    (root / "linked").symlink_to(elsewhere)
    Image.new("RGB", (16, 16)).save(root / ".hidden.png")
    data = GrainDataModule(data_dir=str(root), image_size=16, split="folder", test_fraction=0.0, batch_size=1)
    with pytest.warns(UserWarning, match=r"skipped 1: 1 hidden, name starting with '\.'"):
        split = data.build_split()
    assert sum(len(part) for part in (split.train, split.val, split.test)) == 6  # 4 + 2 through the link
    assert data.unlisted == [(root / ".hidden.png", "hidden, name starting with '.'")]
