"""`serve --model REGISTRY` follows the registry's current pointer (serving/follow.py), over real HTTP on a real socket:
a promoted version is swapped in while clients keep sending photos, without one failed request; a version that does
not load is left out and the old one keeps answering.
"""

from __future__ import annotations

import re
import threading
import time

import httpx
import pytest
from tests.model_variants import flip_a_byte, model_variant
from tests.serving.conftest import Server, png_bytes

from seedlings.artifact import ModelFile
from seedlings.registry import Registry

CLIENTS = 8
POLL = ("--registry-poll", "0.2")


@pytest.fixture
def registry(exported_model, tmp_path) -> Registry:
    """v1 current; v2 and v3 in the registry, not yet current (the same network under three versions)."""
    registry = Registry(tmp_path / "registry")
    for version in ("v1", "v2", "v3"):
        registry.add(model_variant(exported_model, tmp_path / "models" / version, version))
    registry.switch("v1", None, "first")
    return registry


@pytest.fixture
def serve_registry(registry, tmp_path):
    servers: list[Server] = []

    def start(*args: str) -> Server:
        server = Server(registry.root, tmp_path / f"server-{len(servers)}.log", (*POLL, *args))
        servers.append(server)
        return server.wait_ready()

    yield start
    for server in servers:
        server.stop()


def wait_until(condition, what: str, timeout: float = 120) -> None:
    """Block until ``condition()`` holds (polling; a sleep would race on a busy machine)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


class Clients:
    """Threads that POST /v1/predict back to back until stopped; each answer kept as (thread, start, end, version
    or the error)."""

    def __init__(self, url: str, n: int):
        self.url, self.photo = url, png_bytes()
        self.results: list[tuple[int, float, float, str]] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(n)]
        for thread in self._threads:
            thread.start()

    def _send(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            while not self._stop.is_set():
                started = time.monotonic()
                try:
                    r = client.post("/v1/predict", files={"file": ("photo.png", self.photo, "image/png")})
                    outcome = r.json()["model"]["version"] if r.status_code == 200 else f"{r.status_code} {r.text}"
                except (httpx.HTTPError, ValueError, KeyError) as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                self.results.append((i, started, time.monotonic(), outcome))

    def all_answered_by(self, version: str) -> bool:
        """Whether every client has had an answer from ``version``."""
        return len({r[0] for r in list(self.results) if r[3] == version}) == len(self._threads)

    def stop(self) -> list[tuple[int, float, float, str]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        return self.results


def test_a_promoted_version_is_swapped_in_under_load_without_a_failed_request(registry, serve_registry):
    server = serve_registry()
    clients = Clients(server.url, CLIENTS)
    try:
        wait_until(lambda: clients.all_answered_by("v1"), "every client answered by v1")
        registry.switch("v2", "v1", "accepted")  # what `seedlings promote` does once v2 passed
        wait_until(lambda: clients.all_answered_by("v2"), "every client answered by v2")
    finally:
        results = clients.stop()
    assert [r[3] for r in results if r[3] not in ("v1", "v2")] == []  # not one failed request
    for i in range(CLIENTS):  # each client: the old version, then the new one, never back
        versions = [r[3] for r in results if r[0] == i]
        assert versions == sorted(versions) and versions[-1] == "v2", versions
    first_new = min(start for _, start, _, version in results if version == "v2")
    overlapping = [r for r in results if r[3] == "v1" and r[2] > first_new]
    assert overlapping, "no request of the old model was still open when the new one answered"
    swapped = re.search(r"swapped in version v2 \(was v1\); (\d+) request\(s\) still on v1", server.log())
    assert swapped and int(swapped.group(1)) >= 1, server.log()  # the server saw requests in flight at the swap
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/readyz").json()["model"]["version"] == "v2"
        card = client.get("/v1/model").json()
        assert card["version"] == "v2"
        assert client.get(f"/v2/models/{card['name']}").json()["versions"] == ["v2"]
        pixels = [[[0, 128, 255]] * 8] * 8
        infer = client.post(f"/v2/models/{card['name']}/infer", json={"inputs": [
            {"name": "image", "datatype": "UINT8", "shape": [8, 8, 3], "data": pixels}]})
        assert infer.status_code == 200 and infer.json()["model_version"] == "v2", infer.text
        assert 'seedlings_model_switches_total{result="swapped"} 1.0' in client.get("/metrics").text
        assert 'seedlings_ready 1.0' in client.get("/metrics").text  # the old predictor's stop did not unset it


def corrupt_bytes(folder) -> None:
    """model.onnx changed after it entered the registry (a bad disk, a tampered volume): its sha256 no longer
    matches model.json."""
    flip_a_byte(folder / "model.onnx")


def not_onnx(folder) -> None:
    """model.onnx replaced by bytes ONNX Runtime cannot load, listed with their own sha256 (so the hash check
    passes and loading itself fails)."""
    (folder / "model.onnx").write_bytes(b"not an onnx graph" * 100)
    model = ModelFile.load(folder)
    model.record_file(folder, "model.onnx")
    model.save(folder)


@pytest.mark.parametrize(("break_it", "logged"), [(corrupt_bytes, "does not match model.json"),
                                                   (not_onnx, "ONNX Runtime cannot load it")])
def test_a_version_that_does_not_load_is_left_out_and_the_old_one_keeps_serving(registry, serve_registry,
                                                                                  break_it, logged):
    server = serve_registry()
    break_it(registry.version_dir("v2"))
    registry.switch("v2", "v1", "accepted")
    with httpx.Client(base_url=server.url, timeout=30) as client:
        wait_until(lambda: 'seedlings_model_switches_total{result="failed"} 1.0' in client.get("/metrics").text,
                   "the failed load counted")
        assert "version v2 not swapped in" in server.log() and logged in server.log(), server.log()
        r = client.post("/v1/predict", files={"file": ("photo.png", png_bytes(), "image/png")})
        assert r.status_code == 200 and r.json()["model"]["version"] == "v1"
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["model"]["version"] == "v1"
        # still following: the next good version is swapped in
        registry.switch("v3", "v2", "accepted")
        wait_until(lambda: client.get("/readyz").json()["model"]["version"] == "v3", "v3 served")
        r = client.post("/v1/predict", files={"file": ("photo.png", png_bytes(), "image/png")})
        assert r.status_code == 200 and r.json()["model"]["version"] == "v3"
    assert server.log().count("not swapped in") == 1  # a failed version is not tried again every poll
