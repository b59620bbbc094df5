"""The service's preprocessing (numpy, no torch) reproduces the training evaluation transform.

Training evaluates cache rows made by ``data.cache.scan_one`` (open_image → resize_square) through
``torchdata.to_model_input``; the service decodes an upload with ``Model.prepare`` and normalises
with ``preprocess.normalize``. Same bytes in, the same model input out, for sizes, modes and formats
that need resizing, cropping and conversion; and the 8 TTA views are the training's 8 views.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from tests.serving.conftest import require_module

from seedlings.api import load_model
from seedlings.data.cache import scan_one
from seedlings.preprocess import dihedral_views, normalize

CASES = [((300, 200), "RGB", "PNG"), ((200, 300), "RGB", "JPEG"), ((64, 64), "L", "PNG"),
         ((129, 127), "RGBA", "PNG"), ((90, 400), "P", "GIF"), ((512, 512), "CMYK", "JPEG")]


def encoded(size, mode, fmt, seed) -> bytes:
    rgb = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    rgb.convert(mode).save(buf, fmt)
    return buf.getvalue()


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir, backend="onnx")


@pytest.mark.parametrize(("size", "mode", "fmt"), CASES)
def test_serving_input_equals_training_eval_input(model, tmp_path, size, mode, fmt):
    torch = require_module("torch")
    from seedlings.data.torchdata import to_model_input

    data = encoded(size, mode, fmt, seed=size[0])
    (tmp_path / f"photo.{fmt.lower()}").write_bytes(data)
    spec = model.spec
    cached = scan_one(str(tmp_path), f"photo.{fmt.lower()}", spec.image_size, spec.interpolation).array
    served = model.prepare(data)
    np.testing.assert_array_equal(served, cached)  # the same pixels as the training cache
    trained = to_model_input(torch.from_numpy(np.array(cached[None])), spec).numpy()
    np.testing.assert_allclose(normalize(served[None], spec), trained, rtol=0, atol=1e-6)


def test_tta_views_are_the_training_views(model):
    torch = require_module("torch")
    from seedlings.data.torchdata import to_model_input

    spec = model.spec
    batch = np.random.default_rng(0).integers(0, 256, (2, spec.image_size, spec.image_size, 3), dtype=np.uint8)
    x = to_model_input(torch.from_numpy(batch), spec)
    training = [torch.rot90(xf, k, dims=(2, 3)).numpy() for xf in (x, x.flip(3)) for k in range(4)]
    serving = [normalize(v, spec) for v in dihedral_views(batch)]
    assert len(serving) == 8
    for view in serving:
        assert sum(np.allclose(view, t, atol=1e-6) for t in training) == 1, "a serving view the training lacks"
