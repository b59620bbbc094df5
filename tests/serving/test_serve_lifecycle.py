"""Lifecycle: no torch on the serving path, clear start-up errors, SIGTERM drains, int8, workers."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from tests.serving.conftest import png_bytes, serve_command, wait_for_queue_depth


def test_serving_path_never_imports_torch(model_dir):
    """Build the app, load the model and predict in a fresh interpreter: torch must stay unloaded."""
    code = textwrap.dedent(f"""
        import sys
        from starlette.testclient import TestClient
        from seedlings.serving.app import create_app
        from seedlings.serving.settings import Settings
        import seedlings.serving.cli
        app = create_app(Settings(model_dir={str(model_dir)!r}, threads=1))
        with TestClient(app) as client:
            r = client.post("/v1/predict", content={png_bytes()!r}, headers={{"Content-Type": "image/png"}})
            assert r.status_code == 200, r.text
        heavy = sorted(m for m in ("torch", "torchvision", "timm") if m in sys.modules)
        print("heavy:", heavy)
        sys.exit(1 if heavy else 0)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_running_server_has_no_torch_library_loaded(server):
    maps = Path(f"/proc/{server.proc.pid}/maps")
    if not maps.exists():
        pytest.skip("needs Linux /proc")
    assert "libtorch" not in maps.read_text()


@pytest.mark.parametrize(("args", "expected"), [
    (["--model", "/nonexistent/model"], "no such folder"),
    (["--precision", "fp16"], "invalid choice"),
    (["--port", "99999"], "port"),
])
def test_bad_start_is_one_clear_line(model_dir, args, expected):
    command = [*serve_command(), *(["--model", str(model_dir)] if args[0] != "--model" else []), *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode in (1, 2), result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_corrupt_model_file_is_refused(model_dir, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    for f in model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    with open(broken / "model.onnx", "ab") as fh:
        fh.write(b"tampered")
    result = subprocess.run([*serve_command(), "--model", str(broken)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 1 and "sha256" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_finishes_in_flight_requests_and_exits_0(start_server):
    srv = start_server("--max-wait-ms", "5000", "--max-batch", "64", "--no-idle-dispatch")
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        in_flight = [pool.submit(httpx.post, srv.url + "/v1/predict", content=png_bytes(),
                                 headers={"Content-Type": "image/png"}, timeout=60) for _ in range(2)]
        wait_for_queue_depth(srv.url, 2)  # both requests wait in the 5 s batch window
        srv.terminate()
        assert [f.result().status_code for f in in_flight] == [200, 200]
    assert srv.proc.wait(60) == 0, srv.log()
    with pytest.raises(httpx.TransportError):
        httpx.get(srv.url + "/healthz", timeout=2)


def test_int8_model_serves(start_server, model_dir):
    """The answers are model.int8.onnx's, not model.onnx's under an int8 label: the served probabilities
    equal the int8 graph's to float precision and differ from the fp32 graph's."""
    from seedlings.api import load_model

    srv = start_server("--precision", "int8")
    photo = png_bytes()
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/v1/model").json()["precision"] == "int8"
        assert c.get("/readyz").json()["model"]["precision"] == "int8"
        r = c.post("/v1/predict", files={"file": ("a.png", photo, "image/png")}, params={"top_k": 3})
        assert r.status_code == 200, r.text
    served = {t["species"]: t["probability"] for t in r.json()["predictions"][0]["top_k"]}
    for precision, same in (("int8", True), ("fp32", False)):
        (local,) = load_model(model_dir, precision=precision).predict([photo], top_k=3)
        diff = max(abs(served[t["species"]] - t["probability"]) if t["species"] in served else 1.0
                   for t in local.top_k)
        assert (diff < 1e-5) == same, (precision, diff)


def test_int8_export_reports_its_cost(model_dir):
    import json

    meta = json.loads((model_dir / "model.json").read_text())
    report = meta["export"]["int8"]
    assert set(meta["files"]) == {"model.onnx", "model.int8.onnx"}
    assert 0 <= report["max_abs_dprob_vs_fp32"] < 0.5 and 0 <= report["top1_agreement_vs_fp32"] <= 1
    assert (model_dir / "model.int8.onnx").stat().st_size < (model_dir / "model.onnx").stat().st_size / 2


@pytest.mark.slow
def test_two_workers_share_metrics_and_stop_cleanly(start_server):
    srv = start_server("--workers", "2")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for _ in range(6):
            r = c.post("/v1/predict", content=png_bytes(), headers={"Content-Type": "image/png"})
            assert r.status_code == 200
        text = c.get("/metrics").text
    line = next(ln for ln in text.splitlines()
                if ln.startswith('seedlings_http_requests_total{') and 'route="/v1/predict"' in ln)
    assert float(line.split()[-1]) == 6.0, text  # summed over both workers, whichever answered the scrape
    assert srv.stop() == 0, srv.log()
