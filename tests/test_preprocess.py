"""preprocess.py: the spec that travels with a model and the numpy/PIL eval path serving uses."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seedlings.preprocess import PreprocessSpec, dihedral_views, normalize, preprocess, resize_square


def test_resize_square_resizes_the_short_side_and_crops_the_centre():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 20:60] = 255  # the centre square is white, the sides black
    out = resize_square(Image.fromarray(img), 20, "nearest")
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert out.min() == 255  # only the centre is kept


def test_normalize_scales_and_transposes():
    spec = PreprocessSpec(image_size=2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0))
    batch = np.full((1, 2, 2, 3), 255, np.uint8)
    x = normalize(batch, spec)
    assert x.shape == (1, 3, 2, 2) and x.dtype == np.float32
    assert np.allclose(x[0, :, 0, 0], [2.0, 1.0, 0.5])


def test_preprocess_is_resize_then_normalize():
    spec = PreprocessSpec(image_size=8)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (10, 13, 3), dtype=np.uint8))
    assert np.array_equal(preprocess([img], spec), normalize(resize_square(img, 8)[None], spec))


def test_dihedral_views_are_the_eight_distinct_rotations_and_flips():
    batch = np.arange(2 * 3 * 3 * 1, dtype=np.uint8).reshape(2, 3, 3, 1)
    views = dihedral_views(batch)
    assert len(views) == 8 and len({v.tobytes() for v in views}) == 8
    assert np.array_equal(views[0], batch)


def test_spec_round_trips_and_has_no_default_size():
    spec = PreprocessSpec(image_size=64, interpolation="bicubic")
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(TypeError):
        PreprocessSpec()  # the size comes from a run's config or a model's model.json
