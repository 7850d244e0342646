"""The one folder listing (grain_pl.io.images.scan_image_files): symbolic links followed once, and every entry
left out reported with its reason (issue 10, item 3)."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from grain_pl.io.images import describe_skipped, list_image_files, scan_image_files


@pytest.fixture
def linked_folder(tmp_path):
    """photos/a.png, photos/linked -> ../elsewhere (b.png), a loop, a dangling link, a hidden file and folder."""
    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    Image.new("RGB", (4, 4)).save(root / "a.png")
    Image.new("RGB", (4, 4)).save(elsewhere / "b.png")
    Image.new("RGB", (4, 4)).save(root / ".c.png")
    (root / ".cache").mkdir()
    Image.new("RGB", (4, 4)).save(root / ".cache" / "d.png")
    (root / "notes.txt").write_text("not an image, not reported")
    os.symlink(elsewhere, root / "linked")
    os.symlink(root, elsewhere / "back")  # photos/linked/back -> photos: a loop
    os.symlink(tmp_path / "gone.png", root / "dangling.png")
    return root


def test_symlinked_folders_are_followed_once_and_skips_are_reported(linked_folder):
    listing = scan_image_files(linked_folder)
    assert [path.relative_to(linked_folder).as_posix() for path in listing.files] == ["a.png", "linked/b.png"]
    reasons = {path.relative_to(linked_folder).as_posix(): reason for path, reason in listing.skipped}
    assert reasons == {".c.png": "hidden, name starting with '.'", ".cache": "hidden, name starting with '.'",
                       "dangling.png": "broken symbolic link",
                       "linked/back": "folder already searched, a symbolic link loop or a second link to it"}
    summary = listing.summary()
    assert summary.startswith("skipped 4: 2 hidden, name starting with '.' (e.g. ")
    assert "1 broken symbolic link (" in summary and "\n" not in summary
    assert list_image_files(linked_folder) == listing.files


def test_excluded_folders_are_not_searched_and_say_why(linked_folder):
    (linked_folder / "out").mkdir()
    Image.new("RGB", (4, 4)).save(linked_folder / "out" / "a.png")
    listing = scan_image_files(linked_folder, exclude=[(linked_folder / "out", "the output folder")])
    assert linked_folder / "out" / "a.png" not in listing.files
    assert (linked_folder / "out", "the output folder") in listing.skipped


def test_an_empty_listing_says_what_it_skipped(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "only" / ".hidden.png")
    with pytest.raises(ValueError, match=r"no image files under .*only .*; skipped 1: 1 hidden"):
        list_image_files(tmp_path / "only")
    assert describe_skipped([]) == ""
