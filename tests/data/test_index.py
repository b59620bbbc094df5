from __future__ import annotations

import pytest
from tests.helpers import SYNTH_CLASSES, make_dataset

from seedlings.data import index_folder
from seedlings.errors import SeedlingsError


def test_classes_sorted_with_spaces_hidden_and_non_images_ignored(dataset):
    (dataset / "Common Chickweed" / ".DS_Store").write_bytes(b"junk")
    (dataset / "Sugar beet" / "notes.txt").write_text("not an image")
    (dataset / ".hidden_class").mkdir()
    idx = index_folder(dataset)
    assert idx.classes == sorted(SYNTH_CLASSES)
    assert len(idx) == 16 * 3
    assert "Sugar beet/notes.txt" in idx.ignored
    assert all(not f.split("/")[-1].startswith(".") for f in idx.files)
    assert idx.counts()["Common Chickweed"] == 16


@pytest.mark.parametrize("setup,message", [
    (lambda root: root / "missing", "no such folder"),
    (lambda root: (root.mkdir(), root)[1], "no class folders"),
    (lambda root: (make_dataset(root, classes=["Only"], per_class=3), root)[1], "only one class"),
    (lambda root: (make_dataset(root, per_class=2), (root / "Empty").mkdir(), root)[2], "has no images"),
])
def test_errors_name_the_problem(tmp_path, setup, message):
    root = setup(tmp_path / "d")
    with pytest.raises(SeedlingsError, match=message):
        index_folder(root)


def test_a_broken_link_is_named_before_any_image_is_prepared(tmp_path):
    """A folder of symbolic links whose targets moved (relative links made from another folder) said nothing
    but a FileNotFoundError traceback."""
    from seedlings.data import prepare

    root = make_dataset(tmp_path / "d", per_class=3)
    (root / "Sugar beet" / "gone.png").symlink_to("../../nowhere/gone.png")
    with pytest.raises(SeedlingsError, match=r"Sugar beet/gone.png: cannot be read \(a symbolic link to a missing "
                                             r"file\).*fix or remove it"):
        prepare(root, 24, cache_root=tmp_path / "cache", progress=False)
