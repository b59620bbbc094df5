from __future__ import annotations

import os
import time

import numpy as np
import pytest
from PIL import Image

from seedlings.data import prepare
from seedlings.errors import SeedlingsError
from seedlings.images import open_image
from seedlings.preprocess import PreprocessSpec, resize_square


def test_prepare_builds_then_reuses(dataset, tmp_path):
    d1 = prepare(dataset, 32, cache_root=tmp_path / "c", progress=False)
    assert d1.rebuilt and d1.images.shape == (48, 32, 32, 3)
    assert isinstance(d1.images, np.memmap)
    d2 = prepare(dataset, 32, cache_root=tmp_path / "c", progress=False)
    assert not d2.rebuilt and d2.files == d1.files
    rel = d1.files[5]
    expected = resize_square(open_image(dataset / rel), 32)
    assert np.array_equal(d2.images[5], expected)


def test_source_change_rebuilds(dataset, tmp_path):
    prepare(dataset, 32, cache_root=tmp_path / "c", progress=False)
    target = dataset / "Sugar beet" / "img_000.png"
    Image.new("RGB", (48, 48), (255, 0, 0)).save(target)
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10**9))
    data = prepare(dataset, 32, cache_root=tmp_path / "c", progress=False)
    assert data.rebuilt
    row = data.files.index("Sugar beet/img_000.png")
    assert data.images[row][..., 0].mean() > 250
    (dataset / "Sugar beet" / "img_001.png").unlink()
    assert len(prepare(dataset, 32, cache_root=tmp_path / "c", progress=False).files) == 47


def test_bad_images_skip_or_fail(dataset, tmp_path):
    (dataset / "Sugar beet" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (dataset / "Sugar beet" / "empty.jpg").write_bytes(b"")
    data = prepare(dataset, 32, cache_root=tmp_path / "c", progress=False)
    assert {b["path"] for b in data.bad} == {"Sugar beet/broken.png", "Sugar beet/empty.jpg"}
    assert len(data.files) == 48 and data.images.shape[0] == 48
    with pytest.raises(SeedlingsError, match="broken.png") as info:
        prepare(dataset, 32, cache_root=tmp_path / "c", bad_images="fail", progress=False)
    assert "--bad-images skip" in str(info.value)


def test_interrupted_cache_is_not_trusted(dataset, tmp_path):
    data = prepare(dataset, 32, cache_root=tmp_path / "c", progress=False)
    (data.cache_dir / "manifest.json").unlink()  # as if killed before the manifest was written
    stale_tmp = data.cache_dir.with_name(data.cache_dir.name + ".tmp-999999")
    stale_tmp.mkdir()
    again = prepare(dataset, 32, cache_root=tmp_path / "c", progress=False)
    assert again.rebuilt and not stale_tmp.exists()
    np.asarray(again.images[:]).sum()  # readable
    # a truncated array file is detected too
    with open(again.cache_dir / "images.npy", "r+b") as fh:
        fh.truncate(1000)
    assert prepare(dataset, 32, cache_root=tmp_path / "c", progress=False).rebuilt


def test_prepare_takes_the_models_spec_or_a_size(dataset, tmp_path):
    """A PreprocessSpec brings its size and interpolation; a size in pixels takes ``interpolation``."""
    a = prepare(dataset, PreprocessSpec(32, interpolation="bicubic"), cache_root=tmp_path / "c", progress=False)
    b = prepare(dataset, 32, "bicubic", cache_root=tmp_path / "c", progress=False)
    assert a.rebuilt and not b.rebuilt and a.cache_dir == b.cache_dir and a.cache_dir.name.endswith("32px-bicubic")
