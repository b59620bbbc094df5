"""The end-to-end smoke test that always runs: train 1 epoch → export → ONNX parity → HTTP predict."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.request
import uuid

import numpy as np
import pytest
from tests.helpers import free_port, make_dataset, synthetic_image

from seedlings import load_model


def multipart(field: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def test_train_export_parity_http_predict(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=10)
    run, model = tmp_path / "run", tmp_path / "model"
    py = [sys.executable, "-m", "seedlings"]
    subprocess.run([*py, "train", "--data", str(data), "--out", str(run), "--epochs", "1", "--image-size", "32",
                    "--batch-size", "8", "--threads", "1", "--cache-dir", str(tmp_path / "cache")],
                   check=True, capture_output=True)
    export = subprocess.run([*py, "export", str(run), "--out", str(model)], check=True, capture_output=True,
                            text=True)
    delta = float(export.stderr.split("max |Δprob| = ")[1].split()[0])
    assert delta < 1e-4
    port = free_port()
    server = subprocess.Popen([*py, "serve", "--model", str(model), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"server did not become ready:\n{server.stdout.read() if server.poll() else ''}")
                time.sleep(0.2)
        buf = io.BytesIO()
        image = synthetic_image(2, np.random.default_rng(5))
        image.save(buf, format="PNG")
        body, ctype = multipart("file", "leaf.png", buf.getvalue(), "image/png")
        req = urllib.request.Request(f"{base}/v1/predict", data=body, headers={"Content-Type": ctype})
        with urllib.request.urlopen(req, timeout=30) as r:
            answer = json.loads(r.read())
        pred = answer["predictions"][0]
        local = load_model(model).predict(image, top_k=5)[0]  # the Python API on the same image and model
        assert pred["species"] == local.species and pred["unknown"] == local.unknown
        assert pred["confidence"] == pytest.approx(local.confidence, abs=1e-5)
        assert [t["species"] for t in pred["top_k"]] == [t["species"] for t in local.top_k]
        assert {"species", "confidence", "unknown", "top_k"} <= set(pred)
        assert answer["model"]["name"].startswith("seedlings-")
    finally:
        server.terminate()
        server.wait(timeout=30)
