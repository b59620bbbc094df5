"""The reference Open Inference Protocol client, ``tritonclient.http``, used unmodified with its defaults.

Its defaults are what break a server that only speaks JSON: ``set_data_from_numpy`` sends the binary
tensor data extension (a JSON header, then raw bytes, with ``Inference-Header-Content-Length``), asks
for binary outputs, and sends no ``Content-Type: application/json``. Errors must be ``{"error": str}``:
the client turns anything else into an exception whose message cannot be printed.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tests.serving.conftest import png_bytes, require_module

from seedlings.api import load_model

httpclient = require_module("tritonclient.http")
triton_utils = require_module("tritonclient.utils")


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


@pytest.fixture
def triton(server):
    client = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=60)
    yield client
    client.close()


def pixels(seed: int, n: int = 2, h: int = 40, w: int = 52) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_health_and_metadata(triton, model):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(model.name)
    assert not triton.is_model_ready("no-such-model")
    meta = triton.get_model_metadata(model.name)
    assert meta["name"] == model.name and meta["outputs"][0]["shape"] == [-1, len(model.classes)]
    assert triton.get_server_metadata()["name"] == "seedlings"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_uint8_tensor(triton, model, binary):
    batch = pixels(1)
    tensor = httpclient.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    outputs = None if binary else [httpclient.InferRequestedOutput("probabilities", binary_data=False)]
    result = triton.infer(model.name, [tensor], outputs=outputs, request_id="r1")
    got = result.as_numpy("probabilities")
    assert got.dtype == np.float32 and got.shape == (2, len(model.classes))
    expected = model.probabilities(np.stack([model.prepare(a) for a in batch]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert result.get_response()["id"] == "r1"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_encoded_images_with_class_count(triton, model, binary):
    photos = [png_bytes(Image.fromarray(a)) for a in pixels(2)]
    if binary:
        data = np.array(photos, dtype=object)
    else:  # JSON cannot carry raw bytes: BYTES elements are base64 strings there
        import base64

        data = np.array([base64.b64encode(p) for p in photos], dtype=object)
    tensor = httpclient.InferInput("image_bytes", [len(photos)], "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    wanted = httpclient.InferRequestedOutput("probabilities", binary_data=binary, class_count=3)
    result = triton.infer(model.name, [tensor], outputs=[wanted])
    top = result.as_numpy("probabilities")
    assert top.shape == (2, 3)
    expected = model.predict(photos, top_k=3)
    for row, pred in zip(top, expected):
        for cell, best in zip(row, pred.top_k):
            text = cell.decode() if isinstance(cell, bytes) else cell
            score, index, label = text.split(":", 2)
            assert label == best["species"] and model.classes[int(index)] == label
            assert abs(float(score) - best["probability"]) < 1e-5


def test_errors_are_printable(triton, model):
    batch = pixels(3, n=1)
    tensor = httpclient.InferInput("image", list(batch.shape), "UINT8")
    tensor.set_data_from_numpy(batch)
    with pytest.raises(triton_utils.InferenceServerException) as caught:
        triton.infer("no-such-model", [tensor])
    assert "no model 'no-such-model'" in str(caught.value) and caught.value.status() == "404"
    floats = httpclient.InferInput("image", [1, 40, 52, 3], "FP32")
    floats.set_data_from_numpy(batch.astype(np.float32))
    with pytest.raises(triton_utils.InferenceServerException) as caught:
        triton.infer(model.name, [floats])
    assert "datatype 'FP32' is not accepted" in caught.value.message()
    with pytest.raises(triton_utils.InferenceServerException) as caught:
        triton.get_model_metadata("no-such-model")
    assert "no model" in str(caught.value)
