"""The `train` and `notebook` images, built and run for real with podman (see tests/deploy/podman.py).

train: a tiny synthetic dataset, 2 epochs under `torchrun --standalone --nproc-per-node 2` inside the
container, as locked down as the Kubernetes Job (non-root, read-only root, no capabilities, no
network), gives one model. notebook: JupyterLab answers with the token from JUPYTER_TOKEN and refuses
without it, the notebooks are inside, and a kernel runs code importing what the notebooks need. The
notebook image is built on the train image's dependency layers, so its build reuses them. Skips
without podman, except with CI=true.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests.helpers import free_port

from . import podman as P

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

NOTEBOOK_IMAGE = "localhost/seedlings-notebook:test"
LOCKED_DOWN = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *P.ULIMITS]


@pytest.fixture(scope="module")
def notebook_image(train_image) -> str:  # train_image: conftest's session fixture; notebook reuses its layers
    return P.build("notebook", NOTEBOOK_IMAGE)


def test_train_image_trains_under_torchrun(train_image, dataset, tmp_path):
    P.image_size_mb(train_image)
    assert P.inspect(train_image, "{{.Config.User}}").split(":")[0] == "10001"
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o777)  # the container writes as uid 10001
    cmd = [
        *P.PODMAN, "run", "--rm", "--network", "none", *LOCKED_DOWN,
        # The Job's settings: caches in /tmp (read-only root), a larger /dev/shm for gloo.
        "--tmpfs", "/tmp", "--shm-size", "256m", "-e", "HOME=/tmp", "-e", "MPLCONFIGDIR=/tmp/matplotlib",
        "-e", "OMP_NUM_THREADS=1",
        "-v", f"{data}:/data:ro", "-v", f"{runs}:/runs",
        "--entrypoint", "torchrun", train_image,
        "--standalone", "--nproc-per-node", "2", "--max-restarts", "0",
        "-m", "seedlings", "train", "--data", "/data", "--out", "/runs/tiny", "--cache-dir", "/tmp/cache",
        "--epochs", "2", "--image-size", "32", "--batch-size", "16", "--threads", "1",
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = P.run(cmd, timeout=900)
    print(f"torchrun in the train container: {time.monotonic() - t0:.0f}s")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run = runs / "tiny"
    meta = json.loads((run / "model.json").read_text())
    assert meta["training"]["world_size"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["world_size"] for r in rows] == [2, 2]
    assert (run / "weights.safetensors").stat().st_size > 10_000
    assert (run / "model.json").stat().st_uid == 10001, "the container wrote as root"
    if Path(P.CA_BUNDLE).is_file():  # mounted for the build only, never baked into a layer
        inside = subprocess.run(
            [*P.PODMAN, "run", "--rm", "--network", "none", *P.ULIMITS, "--entrypoint", "cat", train_image,
             P.CA_BUNDLE],  # fmt: skip
            capture_output=True,
        )
        assert inside.stdout != Path(P.CA_BUNDLE).read_bytes(), "the build host's CA bundle is in a layer"


def _api(port: int, path: str, token: str | None = None, method: str = "GET") -> tuple[int, dict]:
    headers = {"Authorization": f"token {token}"} if token else {}
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
            return r.status, json.loads(body) if body else {}
    except urllib.error.HTTPError as err:
        return err.code, {}


def test_notebook_image_serves_jupyterlab_with_token(notebook_image):
    P.image_size_mb(notebook_image)
    assert "JUPYTER_TOKEN" not in P.inspect(notebook_image, "{{.Config.Env}}"), "a token was baked in"
    token, port = secrets.token_hex(16), free_port()
    start = P.run(
        [
            *P.PODMAN, "run", "-d", "--rm", "--network", "host",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", *P.ULIMITS,
            "-e", f"JUPYTER_TOKEN={token}", "-e", f"JUPYTER_PORT={port}", notebook_image,
        ],  # fmt: skip
        timeout=60,
    )
    assert start.returncode == 0, start.stderr
    cid = start.stdout.strip()
    try:
        P.wait_answering(f"http://127.0.0.1:{port}/api", cid)
        assert _api(port, "/api/status", token)[0] == 200
        assert _api(port, "/api/status")[0] == 403
        assert _api(port, "/api/status", "not-the-token")[0] == 403
        status, listing = _api(port, "/api/contents/notebooks", token)
        assert status == 200
        names = {item["name"] for item in listing["content"]}
        assert {"plant-seedlings.ipynb", "compare-backbones.ipynb"} <= names, names
        assert _api(port, "/api/kernels", token, method="POST")[0] == 201  # the server launches kernels
        # A kernel runs what the notebooks import, the serving part (export + serve) included.
        code = "import seedlings, torch, timm, onnxruntime, fastapi, uvicorn, httpx, matplotlib; print('ok', 6 * 7)"
        kernel = subprocess.run(
            [*P.PODMAN, "exec", cid, "sh", "-c", f'echo "{code}" > /tmp/k.py && jupyter run /tmp/k.py'],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert "ok 42" in kernel.stdout, kernel.stdout[-2000:] + kernel.stderr[-2000:]
        uid = subprocess.run([*P.PODMAN, "exec", cid, "id", "-u"], capture_output=True, text=True, check=True)
        assert uid.stdout.strip() == "10001"
    finally:
        subprocess.run([*P.PODMAN, "rm", "-f", cid], capture_output=True, timeout=60)
