"""The HTTP contract of docs/architecture.md ("HTTP") over a real socket: shapes, status codes, operations endpoints."""

from __future__ import annotations

import json
import re
from urllib.parse import urljoin, urlsplit

import httpx
import numpy as np
import pytest
from tests.serving.conftest import png_bytes

from seedlings.api import load_model

ERROR_KEYS = {"code", "message"}


def assert_prediction(p: dict, classes: list[str], k: int) -> None:
    assert {"species", "confidence", "unknown", "top_k"} <= set(p)
    assert p["species"] in classes and isinstance(p["unknown"], bool)
    assert len(p["top_k"]) == k
    probs = [t["probability"] for t in p["top_k"]]
    assert probs == sorted(probs, reverse=True)
    assert p["top_k"][0] == {"species": p["species"], "probability": p["confidence"]}


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_predict_multipart_matches_python_api(client, model_dir):
    """HTTP answers are the Python API's answers: same preprocessing, same model, same calibration."""
    data = png_bytes()
    r = client.post("/v1/predict", files={"file": ("leaf.png", data, "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    model = load_model(model_dir)
    assert body["model"] == {"name": model.name, "version": model.version}
    (pred,) = body["predictions"]
    assert_prediction(pred, model.classes, min(5, len(model.classes)))
    assert pred["file"] == "leaf.png"
    expected = model.predict(data)[0]
    assert pred["species"] == expected.species
    np.testing.assert_allclose(pred["confidence"], expected.confidence, atol=1e-5)


def test_predict_several_files_and_top_k(client, model_dir):
    classes = load_model(model_dir).classes
    files = [("file", (f"{i}.png", png_bytes(), "image/png")) for i in range(3)]
    r = client.post("/v1/predict", params={"top_k": 2}, files=files)
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert [p["file"] for p in preds] == ["0.png", "1.png", "2.png"]
    for p in preds:
        assert_prediction(p, classes, 2)


def test_predict_raw_body_and_tta(client, model_dir):
    classes = load_model(model_dir).classes
    r = client.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"},
                    params={"tta": "true", "top_k": 100})
    assert r.status_code == 200, r.text
    (pred,) = r.json()["predictions"]
    assert "file" not in pred
    assert_prediction(pred, classes, len(classes))  # top_k is capped at the number of species
    jpeg = client.post("/v1/predict", content=png_bytes(fmt="JPEG"), headers={"Content-Type": "image/jpeg"})
    assert jpeg.status_code == 200


def test_model_card(client, model_dir):
    """GET /v1/model shows model.json's fields as the typed ModelFile reads them (the serving's only reader)."""
    from seedlings.artifact import ModelFile

    card = client.get("/v1/model").json()
    meta = json.loads((model_dir / "model.json").read_text())
    file = ModelFile.load(model_dir)
    assert card["classes"] == meta["classes"] == file.classes and card["name"] == meta["name"]
    assert (card["backbone"], card["version"], card["image_size"]) == (
        file.backbone, file.version, file.preprocess.image_size)
    assert card["calibration"]["temperature"] == file.calibration.temperature
    assert card["unknown"]["threshold"] == file.unknown.threshold
    assert card["unknown"].get("distance_threshold") == file.unknown.distance_threshold
    assert card["metrics"] == meta.get("metrics", {}) and card["created"] == meta.get("created")
    assert card["precision"] == "fp32" and card["backend"] == "onnx"
    assert card["serving"]["max_body_bytes"] == 10 * 1024 * 1024
    assert "int8" in card["export"]


def test_metrics_exposition(client):
    client.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"})
    client.post("/v1/predict", content=b"not an image", headers={"Content-Type": "image/png"})
    text = client.get("/metrics").text
    for name in ('seedlings_http_requests_total{method="POST",route="/v1/predict",status="200"}',
                 "seedlings_http_request_duration_seconds_bucket", "seedlings_http_requests_in_flight",
                 "seedlings_batch_size_bucket", "seedlings_inference_seconds_bucket",
                 'seedlings_images_rejected_total{reason="not_an_image"}', "seedlings_ready 1.0",
                 "process_resident_memory_bytes"):
        assert name in text, name


def test_openapi_docs_and_page(client):
    spec = client.get("/openapi.json").json()
    for path in ("/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics", "/v2/models/{name}/infer"):
        assert path in spec["paths"], path
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'capture="environment"' in page.text and "multiple" in page.text
    assert "https://" not in page.text  # no CDN: the page works offline
    for asset in ("/static/app.js", "/static/style.css", "/static/species.json"):
        r = client.get(asset)
        assert r.status_code == 200 and "https://" not in r.text, asset
    assert set(client.get("/static/species.json").json()) >= set(client.get("/v1/model").json()["classes"])


def test_docs_are_served_offline(client, server):
    """/docs is Swagger UI from the package: no outside host in the page, every file it names is served."""
    r = client.get("/docs")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    html = r.text
    assert "swagger-ui" in html
    referenced = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    referenced += re.findall(r"""url:\s*["']([^"']+)["']""", html)  # the OpenAPI spec Swagger UI loads
    assert len(referenced) >= 4, referenced  # the script, the stylesheet, the icon, the spec
    outside = [u for u in re.findall(r"(?:https?:)?//[\w.-]+", html)]
    assert not outside, f"/docs names outside hosts: {outside}"
    for ref in referenced:
        url = urljoin(server.url + "/docs", ref)
        assert urlsplit(url).netloc == urlsplit(server.url).netloc, ref
        asset = httpx.get(url, timeout=30)
        assert asset.status_code == 200 and asset.content, (ref, asset.status_code)
    assert "validatorUrl" in html and '"validatorUrl": null' in html  # no badge from validator.swagger.io
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'self'" in csp
    bundle = client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert "javascript" in bundle.headers["content-type"] and len(bundle.content) > 500_000
    assert client.get("/static/swagger-ui/LICENSE").status_code == 200  # Apache-2.0 travels with the files
    assert client.get("/redoc").status_code == 404  # ReDoc would load from a CDN; it is not offered


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/nope", 404, "not_found"),
    ("GET", "/v1/predict", 405, "method_not_allowed"),
    ("POST", "/v1/predict?top_k=0", 422, "invalid_request"),
    ("POST", "/v1/predict?tta=maybe", 422, "invalid_request"),
])
def test_errors_have_one_shape(client, method, path, status, code):
    r = client.request(method, path, content=png_bytes(), headers={"Content-Type": "image/png"})
    assert r.status_code == status, r.text
    assert set(r.json()["error"]) == ERROR_KEYS and r.json()["error"]["code"] == code


@pytest.mark.parametrize(("method", "path", "status", "code"), [
    ("GET", "/v2/models/no-such-model", 404, "model_not_found"),
    ("GET", "/v2/nope", 404, "not_found"),
    ("GET", "/v2/models/x/infer", 405, "method_not_allowed"),
])
def test_v2_errors_have_the_protocols_shape(client, method, path, status, code):
    """On /v2 the Open Inference Protocol's {"error": "<message>"}; the code travels in a header."""
    r = client.request(method, path)
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str) and r.json()["error"]
    assert r.headers["seedlings-error-code"] == code


def test_token_cors_and_limits(start_server):
    """Optional bearer token on prediction endpoints only; CORS as configured."""
    srv = start_server("--cors-origins", "https://farm.example", env={"SEEDLINGS_API_TOKEN": "s3cret"})
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        body = {"content": png_bytes(), "headers": {"Content-Type": "image/png"}}
        denied = c.post("/v1/predict", **body)
        assert denied.status_code == 401 and denied.json()["error"]["code"] == "unauthorized"
        assert denied.headers["www-authenticate"] == "Bearer"
        wrong = c.post("/v1/predict", content=body["content"],
                       headers={**body["headers"], "Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        ok = c.post("/v1/predict", content=body["content"],
                    headers={**body["headers"], "Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        model = c.get("/v1/model").json()["name"]
        tensor = {"name": "image", "datatype": "UINT8", "shape": [8, 8, 3], "data": [0] * 192}
        v2 = c.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]})
        assert v2.status_code == 401 and "Bearer" in v2.json()["error"]
        v2 = c.post(f"/v2/models/{model}/infer", json={"inputs": [tensor]}, headers={"Authorization": "Bearer s3cret"})
        assert v2.status_code == 200, v2.text
        assert c.get("/healthz").status_code == 200 and c.get("/v1/model").json()["serving"]["token_required"]
        preflight = c.options("/v1/predict", headers={"Origin": "https://farm.example",
                                                      "Access-Control-Request-Method": "POST"})
        assert preflight.headers["access-control-allow-origin"] == "https://farm.example"
        other = c.get("/healthz", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        refused = c.options("/v1/predict", headers={"Origin": "https://evil.example",
                                                    "Access-Control-Request-Method": "POST"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "cors_rejected"
        # Which routes stay open with a token: probes, the model card (the page reads it), v2 metadata.
        for path in ("/healthz", "/readyz", "/v2/health/ready", "/v1/model", f"/v2/models/{model}", "/metrics"):
            assert c.get(path).status_code == 200, path


def test_json_logs(start_server):
    srv = start_server("--json-logs")
    httpx.get(srv.url + "/healthz")
    srv.stop()
    lines = [json.loads(line) for line in srv.log_path.read_text().splitlines() if line.startswith("{")]
    assert any(e.get("path") == "/healthz" and e.get("status") == 200 for e in lines), \
        srv.log_path.read_text()
    assert all({"time", "level", "logger"} <= set(e) for e in lines)


def test_default_model_says_unknown_for_non_plants_over_http(start_server):
    """The feature-distance signal reaches HTTP clients: a flat colour and noise are flagged, a
    real seedling photo (when the shared data is here) is not."""
    from PIL import Image
    from tests.helpers import REAL_DATA

    from seedlings.inference import DEFAULT_MODEL_DIR

    srv = start_server("--model", str(DEFAULT_MODEL_DIR))
    rng = np.random.default_rng(4)
    files = [("file", ("flat.png", png_bytes(Image.new("RGB", (150, 150), (190, 40, 40))), "image/png")),
             ("file", ("noise.png", png_bytes(Image.fromarray(rng.integers(0, 256, (150, 150, 3), np.uint8))),
                       "image/png"))]
    photos = sorted((REAL_DATA / "Charlock").glob("*.png"))[:3] if REAL_DATA.is_dir() else []
    files += [("file", (p.name, p.read_bytes(), "image/png")) for p in photos]
    r = httpx.post(srv.url + "/v1/predict", files=files, timeout=30)
    assert r.status_code == 200, r.text
    flags = [p["unknown"] for p in r.json()["predictions"]]
    assert flags[:2] == [True, True]
    assert flags[2:] == [False] * len(photos)
