"""CelebA-HQ paper split on synthetic partition/mapping files, seeded folder split, split files."""

from __future__ import annotations

import random
import warnings
from pathlib import Path

import pytest
from PIL import Image

from grain_pl.data.datasets import list_image_files
from grain_pl.data.splits import (
    CELEBA_HQ_PAPER_SPLIT_SIZES,
    DatasetSplit,
    celeba_hq_index,
    celeba_hq_split,
    folder_split,
    read_split_file,
    write_split_file,
)

# CelebA-HQ index -> (original CelebA file, its CelebA partition). The originals are out of order on purpose.
SYNTHETIC_CELEBA_HQ = {
    0: ("119614.jpg", 0),
    1: ("000017.jpg", 1),
    2: ("182001.jpg", 2),
    3: ("000450.jpg", 0),
    4: ("162771.jpg", 1),
    5: ("000003.jpg", 0),
}
# CelebA-HQ distributions name their files in different ways; all must parse to the index.
SYNTHETIC_FILE_NAMES = {0: "0.jpg", 1: "00001.png", 2: "2.png", 3: "imgHQ00003.png", 4: "00004.jpg", 5: "5.jpg"}


def _write_celeba_files(folder: Path, rows: dict[int, tuple[str, int]]) -> tuple[Path, Path]:
    """Write list_eval_partition.txt and CelebA-HQ-to-CelebA-mapping.txt in the official layouts."""
    mapping = folder / "CelebA-HQ-to-CelebA-mapping.txt"
    mapping_lines = ["idx         orig_idx    orig_file"]
    mapping_lines += [f"{index:<12d}{int(orig[:-4]) - 1:<12d}{orig}" for index, (orig, _) in rows.items()]
    mapping.write_text("\n".join(mapping_lines) + "\n")
    partition = folder / "list_eval_partition.txt"
    partition_rows = {orig: part for orig, part in rows.values()} | {"000001.jpg": 0, "202599.jpg": 2}
    partition.write_text("".join(f"{orig} {part}\n" for orig, part in sorted(partition_rows.items())))
    return partition, mapping


def _make_images(root: Path, relative_names: list[str]) -> list[Path]:
    for name in relative_names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(root / name)
    return list_image_files(root)


@pytest.fixture
def celeba_hq(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "CelebA-HQ-img"
    root.mkdir()
    _make_images(root, list(SYNTHETIC_FILE_NAMES.values()))
    partition, mapping = _write_celeba_files(tmp_path, SYNTHETIC_CELEBA_HQ)
    return root, partition, mapping


# ---------------------------------------------------------------------------------------------------- CelebA-HQ


def test_celeba_hq_index_parses_all_naming_styles() -> None:
    names = ("0.jpg", "00000.png", "imgHQ00042.png", "29999.jpg")
    assert [celeba_hq_index(name) for name in names] == [0, 0, 42, 29999]
    assert celeba_hq_index("face.png") is None


def test_celeba_hq_partition_0_is_train_and_1_or_2_is_test(celeba_hq: tuple[Path, Path, Path]) -> None:
    root, partition, mapping = celeba_hq
    split = celeba_hq_split(list_image_files(root), root, partition, mapping)
    expected_train = {index for index, (_, part) in SYNTHETIC_CELEBA_HQ.items() if part == 0}
    assert {celeba_hq_index(path) for path in split.train} == expected_train == {0, 3, 5}
    assert {celeba_hq_index(path) for path in split.test} == {1, 2, 4}
    assert split.val == ()
    assert split.train == tuple(sorted(split.train, key=lambda p: p.name))  # listing order kept


def test_celeba_hq_full_size_gives_the_paper_counts(tmp_path: Path) -> None:
    # 30,000 synthetic rows where exactly 24,183 originals are in CelebA's train partition; no files needed.
    rows = {index: (f"{index + 1:06d}.jpg", 0 if index < 24_183 else 1 + index % 2) for index in range(30_000)}
    partition, mapping = _write_celeba_files(tmp_path, rows)
    paths = [tmp_path / "hq" / f"{index:05d}.png" for index in range(30_000)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right counts must not warn
        split = celeba_hq_split(paths, tmp_path / "hq", partition, mapping)
    assert {"train": len(split.train), "test": len(split.test)} == CELEBA_HQ_PAPER_SPLIT_SIZES


def test_celeba_hq_val_fraction_carves_val_out_of_train(celeba_hq: tuple[Path, Path, Path]) -> None:
    root, partition, mapping = celeba_hq
    plain = celeba_hq_split(list_image_files(root), root, partition, mapping)
    with_val = celeba_hq_split(list_image_files(root), root, partition, mapping, val_fraction=0.2, seed=3)
    assert len(with_val.val) == 1
    assert set(with_val.val) | set(with_val.train) == set(plain.train)
    assert with_val.test == plain.test


def test_celeba_hq_warns_about_missing_images(celeba_hq: tuple[Path, Path, Path]) -> None:
    root, partition, mapping = celeba_hq
    (root / "2.png").unlink()
    with pytest.warns(UserWarning, match="found 5 of the 6 CelebA-HQ images"):
        celeba_hq_split(list_image_files(root), root, partition, mapping)


def test_celeba_hq_errors(celeba_hq: tuple[Path, Path, Path], tmp_path: Path) -> None:
    root, partition, mapping = celeba_hq
    with pytest.raises(FileNotFoundError, match="mapping file .*no_mapping.txt"):
        celeba_hq_split(list_image_files(root), root, partition, tmp_path / "no_mapping.txt")
    with pytest.raises(FileNotFoundError, match="partition file .*no_partition.txt"):
        celeba_hq_split(list_image_files(root), root, tmp_path / "no_partition.txt", mapping)

    Image.new("RGB", (4, 4)).save(root / "00003.jpg")  # a second copy of image 3
    with pytest.raises(ValueError, match="both CelebA-HQ image 3"):
        celeba_hq_split(list_image_files(root), root, partition, mapping)
    (root / "00003.jpg").unlink()

    Image.new("RGB", (4, 4)).save(root / "77.png")
    with pytest.raises(ValueError, match="77.png: CelebA-HQ index 77 is not in the mapping"):
        celeba_hq_split(list_image_files(root), root, partition, mapping)
    (root / "77.png").unlink()

    partition.write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(ValueError, match="line 2"):
        celeba_hq_split(list_image_files(root), root, partition, mapping)


# ---------------------------------------------------------------------------------------------------- folder split


def _names(paths: tuple[Path, ...], root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in paths}


def test_folder_split_is_disjoint_complete_and_sized(tmp_path: Path) -> None:
    paths = _make_images(tmp_path, [f"img{i:03d}.png" for i in range(40)])
    split = folder_split(paths, tmp_path, val_fraction=0.1, test_fraction=0.25, seed=7)
    assert split.sizes() == {"train": 26, "val": 4, "test": 10}
    assert set(split.train) | set(split.val) | set(split.test) == set(paths)  # disjointness: DatasetSplit checks


def test_folder_split_is_deterministic_and_stable_under_relisting(tmp_path: Path) -> None:
    names = [f"img{i:03d}.png" for i in range(60)]
    paths = _make_images(tmp_path / "a", names)
    split = folder_split(paths, tmp_path / "a", test_fraction=0.2, seed=1)
    assert folder_split(paths, tmp_path / "a", test_fraction=0.2, seed=1) == split
    shuffled = paths.copy()
    random.Random(0).shuffle(shuffled)
    assert _names(folder_split(shuffled, tmp_path / "a", test_fraction=0.2, seed=1).test, tmp_path / "a") == _names(
        split.test, tmp_path / "a"
    )
    # The same relative names somewhere else give the same split.
    moved = _make_images(tmp_path / "b", names)
    assert _names(folder_split(moved, tmp_path / "b", test_fraction=0.2, seed=1).test, tmp_path / "b") == _names(
        split.test, tmp_path / "a"
    )
    # One more file moves at most one image out of the old test set.
    grown = _make_images(tmp_path / "a", ["img999.png"])
    grown_test = _names(folder_split(grown, tmp_path / "a", test_fraction=0.2, seed=1).test, tmp_path / "a")
    assert len(_names(split.test, tmp_path / "a") - grown_test) <= 1
    # Another seed draws another test set.
    assert folder_split(paths, tmp_path / "a", test_fraction=0.2, seed=2).test != split.test


def test_folder_split_rejects_impossible_fractions(tmp_path: Path) -> None:
    paths = _make_images(tmp_path, ["a.png", "b.png"])
    with pytest.raises(ValueError, match="test_fraction must be in"):
        folder_split(paths, tmp_path, test_fraction=1.5)
    with pytest.raises(ValueError, match="still leave training images"):
        folder_split(paths, tmp_path, val_fraction=0.5, test_fraction=0.5)


def test_dataset_split_rejects_overlap(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both the train and the test split"):
        DatasetSplit(train=(tmp_path / "x.png",), val=(), test=(tmp_path / "x.png",))


# ---------------------------------------------------------------------------------------------------- split files


def test_split_file_round_trip(tmp_path: Path) -> None:
    root = tmp_path / "data"
    paths = _make_images(root, ["cats/a.png", "cats/b.png", "cats/with space.png", "dogs/c.jpg"])
    split = DatasetSplit(train=(paths[0], paths[1]), val=(paths[3],), test=(paths[2],))
    write_split_file(split, tmp_path / "split.txt", root)
    assert read_split_file(tmp_path / "split.txt", root) == split


def test_split_file_format_and_val_carving(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _make_images(root, [f"{i}.png" for i in range(10)])
    lines = ["# my split", ""] + [f"train {i}.png" for i in range(8)] + ["test   8.png", "test 9.png"]
    (tmp_path / "split.txt").write_text("\n".join(lines) + "\n")
    split = read_split_file(tmp_path / "split.txt", root)
    assert split.sizes() == {"train": 8, "val": 0, "test": 2}
    carved = read_split_file(tmp_path / "split.txt", root, val_fraction=0.2)
    assert carved.sizes() == {"train": 6, "val": 2, "test": 2}


def test_split_file_errors_name_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "data"
    _make_images(root, ["a.png", "b.png"])
    split_file = tmp_path / "split.txt"
    split_file.write_text("train a.png\n# comment\ntest gone.png\n")
    with pytest.raises(FileNotFoundError, match=r"split\.txt line 3 names a missing image: .*gone\.png"):
        read_split_file(split_file, root)
    split_file.write_text("train a.png\nholdout b.png\n")
    with pytest.raises(ValueError, match="line 2: unknown split 'holdout'"):
        read_split_file(split_file, root)
    split_file.write_text("train a.png\ntest a.png\n")
    with pytest.raises(ValueError, match="line 2: a.png is already listed on line 1"):
        read_split_file(split_file, root)
    split_file.write_text("train a.png\nval b.png\n")
    with pytest.raises(ValueError, match="already has val lines"):
        read_split_file(split_file, root, val_fraction=0.1)
    with pytest.raises(FileNotFoundError, match="split file .*absent.txt"):
        read_split_file(tmp_path / "absent.txt", root)
