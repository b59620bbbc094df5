"""Several --data folders as one data set (data/sources.py): classes, identities, duplicates, errors, split."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import make_dataset

from seedlings.data import Split, prepare, prepare_folders, stratified_split
from seedlings.data.sources import duplicates_note
from seedlings.errors import SeedlingsError


def two_folders(tmp_path: Path) -> tuple[Path, Path]:
    """base: Charlock, Maize; feedback: Maize, Sugar beet (a new species), its own Maize/img_000.png (another
    photo of the same name), one photo of base relabelled and one sent again with base's label."""
    base = make_dataset(tmp_path / "base", per_class=5, classes=["Charlock", "Maize"], seed=0, size=24)
    feedback = make_dataset(tmp_path / "feedback", per_class=3, classes=["Maize", "Sugar beet"], seed=1, size=24)
    shutil.copy(base / "Charlock" / "img_001.png", feedback / "Maize" / "relabelled.png")
    shutil.copy(base / "Maize" / "img_002.png", feedback / "Maize" / "sent-again.png")
    return base, feedback


def test_classes_are_the_union_and_identities_unique_and_stable(tmp_path):
    base, feedback = two_folders(tmp_path)
    data = prepare_folders([base, feedback], 24, cache_root=tmp_path / "cache", progress=False)
    assert data.classes == ["Charlock", "Maize", "Sugar beet"]
    assert len(set(data.files)) == len(data.files) == 10 - 2 + 8
    alone = prepare(base, 24, cache_root=tmp_path / "cache", progress=False)
    dropped = {"Charlock/img_001.png", "Maize/img_002.png"}
    assert data.files[:8] == [f for f in alone.files if f not in dropped]  # the first folder's names, as alone
    assert {"Maize/img_000.png", "@1-feedback/Maize/img_000.png", "@1-feedback/Sugar beet/img_002.png"} <= set(
        data.files)
    for file, label in zip(data.files, data.labels):  # each label is the class folder the file is in
        assert file.removeprefix("@1-feedback/").split("/")[0] == data.classes[label]
    assert data.sources == [{"folder": "base", "prefix": "", "images": 8, "duplicates_dropped": 2},
                            {"folder": "feedback", "prefix": "@1-feedback/", "images": 8, "duplicates_dropped": 0}]
    again = prepare_folders([base, feedback], 24, cache_root=tmp_path / "cache", progress=False)
    assert again.files == data.files and np.array_equal(again.labels, data.labels) and not again.rebuilt


def test_a_photo_in_an_earlier_and_a_later_folder_is_kept_once_with_the_later_label(tmp_path):
    base, feedback = two_folders(tmp_path)
    data = prepare_folders([base, feedback], 24, cache_root=tmp_path / "cache", progress=False)
    assert data.duplicates == [
        {"file": "Charlock/img_001.png", "label": "Charlock", "kept": "@1-feedback/Maize/relabelled.png",
         "kept_label": "Maize"},
        {"file": "Maize/img_002.png", "label": "Maize", "kept": "@1-feedback/Maize/sent-again.png",
         "kept_label": "Maize"}]
    assert len(set(data.sha1)) == len(data.sha1)  # no photo twice: it cannot be in training and validation
    assert data.classes[data.labels[data.files.index("@1-feedback/Maize/relabelled.png")]] == "Maize"
    note = duplicates_note(data)
    assert "2 photo(s) of an earlier folder" in note and "1 of them change their label" in note
    assert "Charlock/img_001.png: Charlock → Maize" in note
    # The other order: the base set comes later, so its copies win.
    flipped = prepare_folders([feedback, base], 24, cache_root=tmp_path / "cache", progress=False)
    assert "@1-base/Charlock/img_001.png" in flipped.files and "Maize/relabelled.png" not in flipped.files


def test_the_joined_images_are_the_folders_cached_rows(tmp_path):
    base, feedback = two_folders(tmp_path)
    data = prepare_folders([base, feedback], 24, cache_root=tmp_path / "cache", progress=False)
    alone = {"": prepare(base, 24, cache_root=tmp_path / "cache", progress=False),
             "@1-feedback/": prepare(feedback, 24, cache_root=tmp_path / "cache", progress=False, min_classes=1)}

    def cached(file: str) -> np.ndarray:
        pre = "@1-feedback/" if file.startswith("@1-feedback/") else ""
        part = alone[pre]
        return part.images[part.files.index(file[len(pre):])]

    want = np.stack([cached(f) for f in data.files])
    assert data.images.shape == want.shape and data.image_size == 24
    assert all(np.array_equal(data.images[i], want[i]) for i in range(len(want)))
    rows = np.asarray([15, 0, 9, 3, 8])
    assert np.array_equal(data.images[rows], want[rows]) and np.array_equal(data.images[4:12], want[4:12])
    assert np.array_equal(np.asarray(data.images), want)


def test_one_folder_is_prepared_as_before(tmp_path):
    base, _ = two_folders(tmp_path)
    data = prepare_folders([base], 24, cache_root=tmp_path / "cache", progress=False)
    assert isinstance(data.images, np.memmap) and data.sources is None and data.duplicates == []
    assert data.files == prepare(base, 24, cache_root=tmp_path / "cache", progress=False).files


def _loose_images(root: Path) -> Path:
    make_dataset(root, per_class=2, classes=["x"], size=24)
    for f in (root / "x").iterdir():
        f.rename(root / f.name)
    (root / "x").rmdir()
    return root


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "missing: no such folder"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "empty: has no class folders"),
    (lambda p: _loose_images(p / "loose"), "loose: has 2 image(s) directly in it but no class folders"),
    (lambda p: make_dataset(p / "hollow", per_class=0, classes=["Maize"]), "hollow/Maize: class folder 'Maize' "
                                                                           "has no images"),
    (lambda p: p / "base", "base: given twice"),
])
def test_a_folder_that_cannot_join_is_named(tmp_path, make, message):
    base, _ = two_folders(tmp_path)
    with pytest.raises(SeedlingsError, match=re.escape(message)):
        prepare_folders([base, make(tmp_path)], 24, cache_root=tmp_path / "cache", progress=False)


def test_one_species_in_all_the_folders_together_is_refused(tmp_path):
    a = make_dataset(tmp_path / "a", per_class=2, classes=["Maize"], size=24)
    b = make_dataset(tmp_path / "b", per_class=2, classes=["Maize"], seed=1, size=24)
    with pytest.raises(SeedlingsError, match=r"a, .*b: together only one class folder \('Maize'\)"):
        prepare_folders([a, b], 24, cache_root=tmp_path / "cache", progress=False)


def test_the_split_covers_every_folder_and_each_folder_gets_its_share_back(tmp_path):
    base, feedback = two_folders(tmp_path)
    data = prepare_folders([base, feedback], 24, cache_root=tmp_path / "cache", progress=False)
    split = stratified_split(data.files, data.labels.tolist(), 0.25, seed=3)
    assert sorted(split.train + split.val) == sorted(data.files)
    assert split == stratified_split(data.files, data.labels.tolist(), 0.25, seed=3)
    split.sources = data.sources
    split.save(tmp_path / "split.json")
    loaded = Split.load(tmp_path / "split.json")
    assert loaded == split
    mine = loaded.of_folder(feedback)
    assert mine.sources is None and sorted(mine.train + mine.val) == sorted(
        f.removeprefix("@1-feedback/") for f in data.files if f.startswith("@1-feedback/"))
    first = loaded.of_folder(base)
    assert sorted(first.train + first.val) == sorted(f for f in data.files if not f.startswith("@"))
    assert loaded.of_folder(tmp_path / "elsewhere") is None
    plain = stratified_split(data.files[:8], data.labels[:8].tolist(), 0.25)
    assert plain.of_folder(tmp_path / "anything") is plain and "sources" not in plain.to_dict()


def test_folders_of_one_name_are_told_apart_by_position(tmp_path):
    base = make_dataset(tmp_path / "kaggle" / "train", per_class=3, classes=["Charlock", "Maize"], size=24)
    feedback = make_dataset(tmp_path / "feedback" / "train", per_class=2, classes=["Maize"], seed=1, size=24)
    data = prepare_folders([base, feedback], 24, cache_root=tmp_path / "cache", progress=False)
    assert [s["prefix"] for s in data.sources] == ["", "@1-train/"] and len(set(data.files)) == len(data.files) == 8
    split = stratified_split(data.files, data.labels.tolist(), 0.3)
    split.sources = data.sources
    assert split.of_folder(feedback) is None  # by name it could be either
    second = split.of_folder(feedback, position=1)
    assert sorted(second.train + second.val) == ["Maize/img_000.png", "Maize/img_001.png"]
    first = split.of_folder(base, position=0)
    assert len(first.train + first.val) == 6 and not any(f.startswith("@") for f in first.train + first.val)
