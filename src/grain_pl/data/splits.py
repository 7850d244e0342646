"""Train / val / test splits of an image folder: the CelebA-HQ paper split, a split file, or a seeded split.

All three take the sorted file list of `list_image_files` and return a `DatasetSplit` of absolute paths.

**CelebA-HQ (paper split, 24,183 train / 5,817 test).** CelebA-HQ image `i` is CelebA image `orig_file` of row `i`
in `CelebA-HQ-to-CelebA-mapping.txt` (shipped with CelebAMask-HQ; header `idx orig_idx orig_file`, rows like
`0 119613 119614.jpg`). CelebA's `list_eval_partition.txt` (rows like `000001.jpg 0`) puts each original image in
partition 0 (train), 1 (val) or 2 (test); partitions 1 and 2 together form the test side. CelebA-HQ files may be
named `0.jpg`, `00000.png`, `imgHQ00000.png`, ...: the trailing digits of the file stem give `i`.

**Cat and LSUN Church at 256** are plain folders: use the seeded split (`split="folder"`) or a split file.
LSUN ships LMDB databases whose values are the encoded image bytes (webp in the current release); export one to a
folder once, keeping the bytes as they are (needs `pip install lmdb`):

    import lmdb, pathlib
    out = pathlib.Path("church_outdoor_train"); out.mkdir(exist_ok=True)
    env = lmdb.open("church_outdoor_train_lmdb", readonly=True, lock=False, readahead=False)
    with env.begin() as txn:
        for key, value in txn.cursor():
            out.joinpath(key.decode() + ".webp").write_bytes(value)

LSUN images are 256 px on the shorter side and not square: pair such folders with `resize="center_crop"`.

**Split file format** (`read_split_file` / `write_split_file`): a text file with one image per line, the split
name then the path relative to the data folder, separated by whitespace:

    # comments and blank lines are ignored
    train cats/00001.png
    val   cats/00002.png
    test  cats/00003.png

Paths use "/" and may contain spaces (everything after the first whitespace is the path). Images of the folder
that the file does not name are unused; a named image that does not exist is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CELEBA_HQ_PAPER_SPLIT_SIZES",
    "SPLIT_NAMES",
    "DatasetSplit",
    "celeba_hq_index",
    "celeba_hq_split",
    "folder_split",
    "read_celeba_hq_mapping",
    "read_celeba_partition",
    "read_split_file",
    "write_split_file",
]

SPLIT_NAMES: tuple[str, ...] = ("train", "val", "test")
# What the paper split gives with all 30,000 CelebA-HQ images (CelebA train vs val+test).
CELEBA_HQ_PAPER_SPLIT_SIZES: dict[str, int] = {"train": 24_183, "test": 5_817}
_CELEBA_HQ_NUM_IMAGES = 30_000
_CELEBA_TRAIN_PARTITION = 0
_TRAILING_DIGITS = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class DatasetSplit:
    """Disjoint lists of image paths. An empty `val` means: validate on `test` (as the official code does)."""

    train: tuple[Path, ...]
    val: tuple[Path, ...]
    test: tuple[Path, ...]

    def __post_init__(self) -> None:
        seen: dict[Path, str] = {}
        for name in SPLIT_NAMES:
            for path in getattr(self, name):
                if path in seen:
                    raise ValueError(f"image {path} is in both the {seen[path]} and the {name} split")
                seen[path] = name

    def sizes(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in SPLIT_NAMES}

    def without(self, excluded: Iterable[str | Path]) -> DatasetSplit:
        """The same split with some files (e.g. unreadable ones) removed; the others keep their split."""
        excluded_paths = {Path(path) for path in excluded}
        kept = {name: tuple(p for p in getattr(self, name) if p not in excluded_paths) for name in SPLIT_NAMES}
        return DatasetSplit(**kept)


# --------------------------------------------------------------------------------------------------------------
# Seeded split of any folder
# --------------------------------------------------------------------------------------------------------------


def _seeded_rank(relative_path: str, seed: int) -> str:
    """A pseudo-random sort key that depends only on the file's relative path and the seed."""
    return hashlib.sha256(f"{seed}\0{relative_path}".encode()).hexdigest()


def _holdout_count(fraction: float, num_images: int) -> int:
    """round(fraction * num_images), but at least one image when the fraction is positive."""
    count = round(fraction * num_images)
    return max(count, 1) if fraction > 0 else 0


def _check_fraction(name: str, fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {fraction}")


def _take_by_rank(paths: Sequence[Path], root: Path, counts: Sequence[int], seed: int) -> tuple[list[Path], ...]:
    """Order `paths` by seeded rank and cut them into len(counts) groups of those sizes plus the rest.

    Each file's rank depends on its own relative path only, so adding or removing files moves at most a few
    files across a boundary; all others keep their group. Groups come back in listing order.
    """
    ranked = sorted(paths, key=lambda path: _seeded_rank(path.relative_to(root).as_posix(), seed))
    groups, start = [], 0
    for count in counts:
        groups.append(ranked[start : start + count])
        start += count
    groups.append(ranked[start:])
    order = {path: position for position, path in enumerate(paths)}
    return tuple(sorted(group, key=order.__getitem__) for group in groups)


def folder_split(
    paths: Sequence[Path], root: str | Path, val_fraction: float = 0.0, test_fraction: float = 0.1, seed: int = 0
) -> DatasetSplit:
    """Seeded random split of any folder by ratio.

    `round(test_fraction * N)` images go to test and `round(val_fraction * N)` to val (at least one each when the
    fraction is positive), the rest to train. The choice is a hash of (seed, relative path): it does not depend
    on the listing order or on where the folder lives, and is the same every time.
    """
    root = Path(root)
    _check_fraction("val_fraction", val_fraction)
    _check_fraction("test_fraction", test_fraction)
    num_test = _holdout_count(test_fraction, len(paths))
    num_val = _holdout_count(val_fraction, len(paths))
    if num_test + num_val >= len(paths):
        raise ValueError(
            f"{len(paths)} images cannot give {num_test} test and {num_val} val images and still leave training "
            f"images (val_fraction={val_fraction}, test_fraction={test_fraction})"
        )
    test, val, train = _take_by_rank(list(paths), root, [num_test, num_val], seed)
    return DatasetSplit(train=tuple(train), val=tuple(val), test=tuple(test))


def _carve_val_from_train(
    split: DatasetSplit, root: Path, val_fraction: float, seed: int, num_images: int
) -> DatasetSplit:
    """Move round(val_fraction * num_images) seeded-random training images to val (for fixed train/test splits)."""
    _check_fraction("val_fraction", val_fraction)
    num_val = _holdout_count(val_fraction, num_images)
    if num_val == 0:
        return split
    if num_val >= len(split.train):
        raise ValueError(f"val_fraction={val_fraction} asks for {num_val} of only {len(split.train)} train images")
    val, train = _take_by_rank(list(split.train), root, [num_val], seed)
    return DatasetSplit(train=tuple(train), val=tuple(val), test=split.test)


# --------------------------------------------------------------------------------------------------------------
# CelebA-HQ paper split
# --------------------------------------------------------------------------------------------------------------


def _data_lines(path: Path) -> Iterable[tuple[int, list[str]]]:
    """(1-based line number, whitespace-split fields) of the non-blank lines of a text file."""
    with path.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            fields = line.split()
            if fields:
                yield line_number, fields


def _require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    return path


def read_celeba_partition(partition_file: str | Path) -> dict[str, int]:
    """CelebA `list_eval_partition.txt` -> {"000001.jpg": 0, ...} (0 train, 1 val, 2 test)."""
    partition_file = _require_file(partition_file, "CelebA partition file (list_eval_partition.txt)")
    partition: dict[str, int] = {}
    for line_number, fields in _data_lines(partition_file):
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise ValueError(
                f"{partition_file} line {line_number}: expected '<celeba file> <0|1|2>', got {' '.join(fields)!r}"
            )
        partition[fields[0]] = int(fields[1])
    if not partition:
        raise ValueError(f"CelebA partition file {partition_file} is empty")
    return partition


def read_celeba_hq_mapping(mapping_file: str | Path) -> dict[int, str]:
    """`CelebA-HQ-to-CelebA-mapping.txt` -> {celeba_hq_index: original CelebA file name}."""
    mapping_file = _require_file(mapping_file, "CelebA-HQ mapping file (CelebA-HQ-to-CelebA-mapping.txt)")
    mapping: dict[int, str] = {}
    for line_number, fields in _data_lines(mapping_file):
        if fields[0] == "idx":  # header "idx orig_idx orig_file"
            continue
        if len(fields) != 3 or not fields[0].isdigit():
            raise ValueError(
                f"{mapping_file} line {line_number}: expected '<idx> <orig_idx> <orig_file>', got {' '.join(fields)!r}"
            )
        mapping[int(fields[0])] = fields[2]
    if not mapping:
        raise ValueError(f"CelebA-HQ mapping file {mapping_file} has no rows")
    return mapping


def celeba_hq_index(path: str | Path) -> int | None:
    """The CelebA-HQ index in a file name: `0.jpg`, `00000.png` and `imgHQ00000.png` all give 0."""
    match = _TRAILING_DIGITS.search(Path(path).stem)
    return int(match.group(1)) if match else None


def celeba_hq_split(
    paths: Sequence[Path],
    root: str | Path,
    partition_file: str | Path,
    mapping_file: str | Path,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> DatasetSplit:
    """The paper split of CelebA-HQ: original CelebA partition 0 -> train, partitions 1 and 2 -> test.

    With all 30,000 images this gives 24,183 train / 5,817 test (a mismatch there warns). `val` stays empty
    (validation then runs on test, as in the official code) unless `val_fraction > 0`, which moves
    round(val_fraction * N) seeded-random training images to val.

    Raises:
        FileNotFoundError: a partition or mapping file is missing.
        ValueError: a file name has no CelebA-HQ index, an index is not in the mapping, two files share an
            index, or a mapped CelebA file is not in the partition file.
    """
    root = Path(root)
    partition = read_celeba_partition(partition_file)
    mapping = read_celeba_hq_mapping(mapping_file)
    owner_of_index: dict[int, Path] = {}
    train: list[Path] = []
    test: list[Path] = []
    for path in paths:
        index = celeba_hq_index(path)
        if index is None:
            raise ValueError(f"{path}: not a CelebA-HQ file name (expected digits such as 123.jpg or 00123.png)")
        if index not in mapping:
            raise ValueError(f"{path}: CelebA-HQ index {index} is not in the mapping file {mapping_file}")
        if index in owner_of_index:
            raise ValueError(f"{owner_of_index[index]} and {path} are both CelebA-HQ image {index}")
        owner_of_index[index] = path
        original_file = mapping[index]
        if original_file not in partition:
            raise ValueError(
                f"CelebA file {original_file} (CelebA-HQ image {index}) is not in the partition file {partition_file}"
            )
        (train if partition[original_file] == _CELEBA_TRAIN_PARTITION else test).append(path)

    if len(paths) < len(mapping):
        warnings.warn(
            f"found {len(paths)} of the {len(mapping)} CelebA-HQ images listed in {mapping_file} under {root}",
            stacklevel=2,
        )
    elif len(paths) == _CELEBA_HQ_NUM_IMAGES and (len(train), len(test)) != tuple(CELEBA_HQ_PAPER_SPLIT_SIZES.values()):
        warnings.warn(
            f"the CelebA-HQ paper split should give 24,183 train / 5,817 test images, got {len(train)} / {len(test)}; "
            f"check {partition_file} and {mapping_file}",
            stacklevel=2,
        )
    split = DatasetSplit(train=tuple(train), val=(), test=tuple(test))
    return _carve_val_from_train(split, root, val_fraction, seed, num_images=len(paths))


# --------------------------------------------------------------------------------------------------------------
# Split files
# --------------------------------------------------------------------------------------------------------------


def read_split_file(split_file: str | Path, root: str | Path, val_fraction: float = 0.0, seed: int = 0) -> DatasetSplit:
    """Read a split file (format in the module docstring); paths are resolved against `root`.

    If the file has no `val` lines and `val_fraction > 0`, a seeded-random part of train becomes val.

    Raises:
        FileNotFoundError: the split file is missing, or it names an image that does not exist (file and line).
        ValueError: a malformed line, an unknown split name, an image named twice, no train or test image, or
            both val lines and `val_fraction > 0`.
    """
    split_file = _require_file(split_file, "split file")
    root = Path(root)
    groups: dict[str, list[Path]] = {name: [] for name in SPLIT_NAMES}
    first_line_of: dict[Path, int] = {}
    with split_file.open(encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            fields = stripped.split(maxsplit=1)
            where = f"split file {split_file} line {line_number}"
            if len(fields) != 2:
                raise ValueError(f"{where}: expected '<train|val|test> <relative path>', got {stripped!r}")
            name, relative_path = fields
            if name not in groups:
                raise ValueError(f"{where}: unknown split {name!r} (expected one of {', '.join(SPLIT_NAMES)})")
            path = root / relative_path
            if not path.is_file():
                raise FileNotFoundError(f"{where} names a missing image: {path}")
            if path in first_line_of:
                raise ValueError(f"{where}: {relative_path} is already listed on line {first_line_of[path]}")
            first_line_of[path] = line_number
            groups[name].append(path)
    if not groups["train"] and not groups["test"]:
        raise ValueError(f"split file {split_file} lists no image")
    if groups["val"] and val_fraction > 0:
        raise ValueError(f"split file {split_file} already has val lines; set val_fraction to 0")
    split = DatasetSplit(train=tuple(groups["train"]), val=tuple(groups["val"]), test=tuple(groups["test"]))
    num_images = sum(split.sizes().values())
    return _carve_val_from_train(split, root, val_fraction, seed, num_images=num_images)


def write_split_file(split: DatasetSplit, split_file: str | Path, root: str | Path) -> None:
    """Write `split` in the split-file format, paths relative to `root` (to freeze a split for later runs)."""
    root = Path(root)
    lines = ["# grain_pl split file: '<train|val|test> <path relative to the data folder>'"]
    for name in SPLIT_NAMES:
        lines.extend(f"{name} {Path(path).relative_to(root).as_posix()}" for path in getattr(split, name))
    Path(split_file).write_text("\n".join(lines) + "\n", encoding="utf-8")
