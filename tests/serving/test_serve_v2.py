"""Open Inference Protocol v2 round trips: UINT8 pixels and BYTES-encoded images, as KServe sends them."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from PIL import Image
from tests.serving.conftest import png_bytes

from seedlings.api import load_model


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


def test_large_json_bodies_are_parsed_off_the_event_loop(model_dir, model, monkeypatch):
    """4 × ~10 MB JSON bodies: each is parsed in a decoding thread, never on the event loop's thread, and
    /healthz (the liveness probe, 3 s timeout in the manifests) answers throughout. Parsed on the loop,
    the liveness probe waited for every body in turn (1.2 s for 4 × 10 MB in issue #13)."""
    import json
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    import uvicorn
    from tests.helpers import free_port

    from seedlings.serving import v2_codec
    from seedlings.serving.app import create_app
    from seedlings.serving.settings import Settings

    parsed_on: list[int] = []
    real_parse = v2_codec.parse
    monkeypatch.setattr(v2_codec, "parse", lambda *a: parsed_on.append(threading.get_ident()) or real_parse(*a))
    settings = Settings(model_dir=str(model_dir), threads=1)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    loop_thread = threading.Thread(target=server.run, daemon=True)  # the event loop runs in this thread
    loop_thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url)
        arr = pixels(7, 930, 930)[None]
        body = json.dumps({"inputs": [{"name": "image", "datatype": "UINT8", "shape": list(arr.shape),
                                       "data": arr.ravel().tolist()}]}, separators=(",", ":")).encode()
        assert 8_000_000 < len(body) <= settings.max_body_bytes
        infer = f"{url}/v2/models/{model.name}/infer"
        with ThreadPoolExecutor(4) as pool:
            answers = [pool.submit(httpx.post, infer, content=body, timeout=180) for _ in range(4)]
            health = []
            while not all(a.done() for a in answers):
                health.append(httpx.get(url + "/healthz", timeout=3).status_code)
        assert [a.result().status_code for a in answers] == [200] * 4
        assert health and set(health) == {200}
        assert len(parsed_on) == 4 and loop_thread.ident not in parsed_on, "a body was parsed on the event loop"
    finally:
        server.should_exit = True
        loop_thread.join(60)


def _wait_ready(url: str, timeout: float = 180) -> None:
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} not ready after {timeout}s")


@pytest.mark.parametrize("shape", [[100000, 100000, 3], [2, 2, 3], [1, 900, 30, 3]])
def test_pixel_tensors_are_held_to_the_image_rule(client, model, shape):
    """v2 UINT8 tensors are refused by images.check_dimensions itself: the same code and words as a photo."""
    from seedlings.errors import ImageError
    from seedlings.images import check_dimensions

    r = client.post(f"/v2/models/{model.name}/infer", json={"inputs": [
        {"name": "image", "datatype": "UINT8", "shape": shape, "data": [1] * 12}]})
    with pytest.raises(ImageError) as rule:
        check_dimensions((shape[-2], shape[-3]), 50_000_000, "image")
    assert r.status_code == 422 and r.headers["seedlings-error-code"] == rule.value.code
    assert r.json()["error"] == str(rule.value)
