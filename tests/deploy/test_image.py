"""The `serve` image, built and run for real with podman (no Docker engine or registry needed).

The base image is debootstrapped Debian bookworm + python3 (deploy/docker/make-base.sh, cached under
/var/tmp), passed as BASE_IMAGE; pip inside the build reaches PyPI through the host's CA bundle,
mounted read-only for the build only (tests/deploy/podman.py). Podman caches the layers, so a rerun
rebuilds only what changed. Skips when podman or debootstrap is missing, except with CI=true, where it fails.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
from tests.helpers import free_port

from .conftest import REPO, child_env
from .podman import CA_BUNDLE, PODMAN, ULIMITS
from .podman import run as timed_run

# A cold build (debootstrap + pip downloads) takes minutes; a warm one reuses every cached layer.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]

def _model_for(request, tmp: Path) -> tuple[list[str], list[str]]:
    """The shipped default model when the package has one; else a tiny exported model, mounted read-only."""
    if (REPO / "src/seedlings/default_model/model.json").is_file():
        classes = json.loads((REPO / "src/seedlings/default_model/model.json").read_text())["classes"]
        return [], classes
    trained_run = request.getfixturevalue("trained_run")  # trains only when there is no default model
    out = tmp / "model"
    proc = subprocess.run(
        [sys.executable, "-m", "seedlings", "export", str(trained_run), "--out", str(out)],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The container runs as uid 10001; atomic writes leave files 0600 (mkstemp), unreadable to it.
    out.chmod(0o755)
    for f in out.iterdir():
        f.chmod(0o644)
    return ["-v", f"{out}:/models/test:ro,Z", "-e", "SEEDLINGS_MODEL_DIR=/models/test"], json.loads(
        (out / "model.json").read_text()
    )["classes"]


def _wait_ready(url: str, cid: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    logs = subprocess.run([*PODMAN, "logs", cid], capture_output=True, text=True)
    pytest.fail(
        f"{url} not ready after {timeout:.0f}s; container logs:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
    )


def _png() -> bytes:
    import numpy as np
    from PIL import Image

    img = np.zeros((40, 40, 3), dtype=np.uint8)
    img[..., 1] = 200
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _predict(url: str) -> dict:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            f"Content-Type: image/png\r\n\r\n"
        ).encode()
        + _png()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_serve_image_runs_non_root_and_predicts(serve_image, request, tmp_path):
    size = int(
        subprocess.run(
            [*PODMAN, "image", "inspect", "--format", "{{.Size}}", serve_image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    print(f"serve image: {size / 1e6:.0f} MB")
    # Issue #24's budget: what a node pulls when the service scales from zero (docs/deploy.md, "Cold start").
    assert size <= 300e6, f"serve image {size / 1e6:.0f} MB > 300 MB: see docs/deploy.md for where it goes"
    mount, classes = _model_for(request, tmp_path)
    port = free_port()
    # As locked down as the Kubernetes Deployment: read-only root, no capabilities, no privilege gain.
    start = timed_run(
        [
            *PODMAN,
            "run",
            "-d",
            "--rm",
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            *ULIMITS,
            *mount,
            "-e",
            f"SEEDLINGS_PORT={port}",
            serve_image,
        ],
        timeout=60,
    )
    assert start.returncode == 0, start.stderr
    cid = start.stdout.strip()
    try:
        t0 = time.monotonic()
        _wait_ready(f"http://127.0.0.1:{port}/readyz", cid)
        print(f"ready in {time.monotonic() - t0:.1f}s")
        result = _predict(f"http://127.0.0.1:{port}/v1/predict")
        (pred,) = result["predictions"]
        assert pred["species"] in classes and 0 <= pred["confidence"] <= 1
        uid = subprocess.run([*PODMAN, "exec", cid, "id", "-u"], capture_output=True, text=True, check=True)
        assert uid.stdout.strip() == "10001"
        user = subprocess.run(
            [*PODMAN, "image", "inspect", "--format", "{{.Config.User}}", serve_image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert user.split(":")[0] not in ("", "0", "root")
        if Path(CA_BUNDLE).is_file():
            inside = subprocess.run([*PODMAN, "exec", cid, "cat", CA_BUNDLE], capture_output=True)
            assert inside.stdout != Path(CA_BUNDLE).read_bytes(), (
                "the build host's CA bundle was baked into a layer"
            )
        torch = subprocess.run([*PODMAN, "exec", cid, "python3", "-c", "import torch"], capture_output=True)
        assert torch.returncode != 0, "the serve image must not contain torch"
    finally:
        subprocess.run([*PODMAN, "rm", "-f", cid], capture_output=True, timeout=60)
