"""Open Inference Protocol v2 round trips: UINT8 pixels and BYTES-encoded images, as KServe sends them."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image
from tests.serving.conftest import png_bytes

from seedlings.inference import load_model


@pytest.fixture(scope="module")
def model(model_dir):
    return load_model(model_dir)


def pixels(seed: int, h: int = 40, w: int = 52) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_health_and_metadata(client, model):
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["name"] == "seedlings"
    meta = client.get(f"/v2/models/{model.name}").json()
    assert meta["name"] == model.name and meta["versions"] == [model.version]
    assert meta["outputs"] == [{"name": "probabilities", "datatype": "FP32",
                                "shape": [-1, len(model.classes)]}]
    assert {i["datatype"] for i in meta["inputs"]} == {"UINT8", "BYTES"}
    assert client.get(f"/v2/models/{model.name}/versions/{model.version}").status_code == 200
    assert client.get(f"/v2/models/{model.name}/ready").json() == {"name": model.name, "ready": True}
    missing = client.get(f"/v2/models/{model.name}/versions/0.0")
    assert missing.status_code == 404 and missing.headers["seedlings-error-code"] == "model_not_found"


def test_uint8_round_trip_matches_python_api(client, model):
    batch = np.stack([pixels(1), pixels(2)])
    body = {"id": "req-1", "inputs": [{"name": "image", "datatype": "UINT8", "shape": list(batch.shape),
                                       "data": batch.reshape(-1).tolist()}]}
    r = client.post(f"/v2/models/{model.name}/infer", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model_name"] == model.name and out["model_version"] == model.version and out["id"] == "req-1"
    (probs,) = out["outputs"]
    assert probs["name"] == "probabilities" and probs["datatype"] == "FP32"
    assert probs["shape"] == [2, len(model.classes)]
    got = np.asarray(probs["data"]).reshape(probs["shape"])
    expected = model.probabilities(np.stack([model.prepare(a) for a in batch]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    nested = {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [40, 52, 3],
                          "data": pixels(1).tolist()}]}
    one = client.post(f"/v2/models/{model.name}/infer", json=nested).json()["outputs"][0]
    np.testing.assert_allclose(np.asarray(one["data"]), got[0], atol=1e-6)


def test_bytes_round_trip_with_classification(client, model):
    images = [png_bytes(Image.fromarray(pixels(3))), png_bytes(Image.fromarray(pixels(4)), "JPEG")]
    body = {"inputs": [{"name": "image_bytes", "datatype": "BYTES", "shape": [2],
                        "data": [base64.b64encode(b).decode() for b in images]}],
            "outputs": [{"name": "probabilities", "parameters": {"classification": 2}}]}
    r = client.post(f"/v2/models/{model.name}/infer", json=body)
    assert r.status_code == 200, r.text
    (out,) = r.json()["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [2, 2]
    expected = model.predict(images, top_k=2)
    for i, pred in enumerate(expected):
        for j, top in enumerate(pred.top_k):
            score, index, label = out["data"][i * 2 + j].split(":", 2)
            assert label == top["species"] and model.classes[int(index)] == label
            assert abs(float(score) - top["probability"]) < 1e-5
    request_level = {"inputs": body["inputs"], "parameters": {"classification": 1}}
    answer = client.post(f"/v2/models/{model.name}/infer", json=request_level).json()
    assert answer["outputs"][0]["shape"] == [2, 1]


@pytest.mark.parametrize(("tensor", "code"), [
    ({"datatype": "FP32", "shape": [1], "data": [0.5]}, "unsupported_datatype"),
    ({"datatype": "UINT8", "shape": [2, 2], "data": [1, 2, 3, 4]}, "invalid_tensor"),
    ({"datatype": "UINT8", "shape": [10, 10, 3], "data": [1, 2, 3]}, "invalid_tensor"),
    ({"datatype": "UINT8", "shape": [10, 10, 3], "data": [300] * 300}, "invalid_tensor"),
    ({"datatype": "UINT8", "shape": [10, 10, 3], "data": ["a"] * 300}, "invalid_tensor"),
    ({"datatype": "UINT8", "shape": [10, 10, 3], "data": [0.5] * 300}, "invalid_tensor"),  # not cast silently
    ({"datatype": "UINT8", "shape": [10, 10, 3], "data": [True] * 300}, "invalid_tensor"),
    ({"datatype": "UINT8", "shape": [10, 10, 3], "data": [1.0] * 300}, "invalid_tensor"),
    ({"datatype": "UINT8", "shape": [100000, 100000, 3], "data": [1]}, "too_large"),
    ({"datatype": "UINT8", "shape": [2, 2, 3], "data": [1] * 12}, "bad_dimensions"),
    ({"datatype": "UINT8", "shape": [-1, 10, 3], "data": [1]}, "invalid_tensor"),
    ({"datatype": "BYTES", "shape": [1], "data": ["%%% not base64"]}, "invalid_tensor"),
    ({"datatype": "BYTES", "shape": [1], "data": [base64.b64encode(b"hello").decode()]}, "not_an_image"),
    ({"datatype": "BYTES", "shape": [1], "data": [12]}, "invalid_tensor"),
    ({"datatype": "BYTES", "shape": [0], "data": []}, "invalid_tensor"),
])
def test_bad_tensors(client, model, tensor, code):
    r = client.post(f"/v2/models/{model.name}/infer", json={"inputs": [{"name": "image", **tensor}]})
    assert r.status_code == 422, r.text
    assert_v2_error(r, code)


def assert_v2_error(r, code: str) -> None:
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str), r.text
    assert r.headers["seedlings-error-code"] == code


@pytest.mark.parametrize(("body", "status", "code"), [
    ({}, 422, "invalid_request"),
    ({"inputs": []}, 422, "invalid_request"),
    ({"inputs": [{"name": "x"}]}, 422, "invalid_request"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [8, 8, 3], "data": [0] * 192}],
      "outputs": [{"name": "logits"}]}, 422, "unknown_output"),
    ({"inputs": [{"name": "image", "datatype": "UINT8", "shape": [8, 8, 3], "data": [0] * 192}],
      "parameters": {"classification": "two"}}, 422, "invalid_tensor"),
])
def test_bad_requests(client, model, body, status, code):
    r = client.post(f"/v2/models/{model.name}/infer", json=body)
    assert r.status_code == status, r.text
    assert_v2_error(r, code)


def test_unknown_model_and_not_json(client, model):
    tensor = {"name": "image", "datatype": "UINT8", "shape": [8, 8, 3], "data": [0] * 192}
    r = client.post("/v2/models/other/infer", json={"inputs": [tensor]})
    assert r.status_code == 404 and model.name in r.json()["error"]
    r = client.post(f"/v2/models/{model.name}/infer", content=b"{not json",
                    headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and r.headers["seedlings-error-code"] == "invalid_request"
