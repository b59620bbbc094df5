"""Serving fixtures: one exported model (fp32 + int8) per session and real server processes.

The server is started exactly as users start it (``python -m seedlings serve``) on a free
port and talked to over a real socket, so the tests cover argument parsing, uvicorn, the
lifespan (load + warm-up) and signal handling, not just the ASGI app.
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from tests.helpers import free_port, synthetic_image

READY_TIMEOUT_S = 180  # generous: CI machines can be very busy


def require_module(name: str):
    """Import an optional test tool; skip without it on a user's machine, fail under CI=true."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail(f"python package {name} is required in CI: pip install -e '.[dev]'")
        pytest.skip(f"python package {name} not installed (pip install -e '.[dev]')")


def serve_command() -> list[str]:
    return [sys.executable, "-m", "seedlings", "serve"]


def png_bytes(img: Image.Image | None = None, fmt: str = "PNG", **save) -> bytes:
    if img is None:
        img = synthetic_image(0, np.random.default_rng(1), 48)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def read_until_closed(sock) -> bytes:
    """Everything the server sends until it closes; a socket timeout (the server kept it open) fails the test."""
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def wait_for_queue_depth(url: str, depth: int, timeout: float = 60) -> None:
    """Block until the server's batching queue holds ``depth`` images (sleeps would race on busy machines)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"seedlings_queue_depth {depth:.1f}" in httpx.get(url + "/metrics", timeout=10).text:
            return
        time.sleep(0.05)
    raise AssertionError(f"the queue never held {depth} images")


class Server:
    """A ``seedlings serve`` subprocess; its output goes to a log file shown when a test fails."""

    def __init__(self, model_dir: Path, log_path: Path, args: tuple[str, ...] = (), env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        full_env = {k: v for k, v in full_env.items() if not k.startswith("SEEDLINGS_") or k in (env or {})}
        self.command = [*serve_command(), "--model", str(model_dir), "--port", str(self.port),
                        "--threads", "1",
                        *args]
        self._log = open(log_path, "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)
        self.ready_s = None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} before ready:\n{self.log()}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    self.ready_s = time.monotonic() - self.started
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-5000:]

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 30) -> int:
        self.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self._log.close()


@pytest.fixture(scope="session")
def model_dir(trained_run, tmp_path_factory) -> Path:
    """The shared tiny run exported with fp32 and int8 ONNX models."""
    from seedlings.export.onnx import export_run

    return export_run(trained_run, tmp_path_factory.mktemp("serving") / "model", precision="int8",
                      log=lambda m: None)


@pytest.fixture(scope="session")
def start_server(model_dir, tmp_path_factory):
    """Factory: start a server with extra flags/env; every one started is stopped at session end."""
    servers: list[Server] = []

    def start(*args: str, env: dict | None = None, wait: bool = True) -> Server:
        log_path = tmp_path_factory.mktemp("server") / "server.log"
        server = Server(model_dir, log_path, args, env)
        servers.append(server)
        return server.wait_ready() if wait else server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def server(start_server) -> Server:
    """The default server (micro-batching on) that most tests share."""
    return start_server()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c
