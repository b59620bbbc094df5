"""Building and running the images with podman, as the image tests need it (no Docker engine, no registry).

Every build passes the same options, so the stages the targets share (base, wheel, requirements, the
train dependencies under `notebook`) come from podman's layer cache after the first build:
- the base image is debootstrapped Debian bookworm + python3 (deploy/docker/make-base.sh, cached);
- the host's CA bundle is mounted read-only for the build only (PIP_CERT is a path, not a layer);
- local package sources the host's pip is configured with (find-links folders, file:// indexes) are
  mounted read-only and named through pip's own variables; torch then comes from them too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO, skip_or_fail

PODMAN = ["podman", "--runtime", "runc"]
ULIMITS = ["--ulimit", "nofile=16384:16384", "--ulimit", "nproc=32768:32768"]
BASE = "localhost/seedlings-base:bookworm"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PYPI = "https://pypi.org/simple"


def run(cmd, timeout, **kw) -> subprocess.CompletedProcess:
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    print(f"{time.monotonic() - t0:6.1f}s  {' '.join(cmd[:6])} …")
    return proc


def require_podman() -> None:
    missing = [t for t in ("podman", "debootstrap") if not shutil.which(t)]
    if missing or os.geteuid() != 0:
        skip_or_fail(
            f"building the images needs root and {', '.join(missing) or 'podman'} "
            "(apt-get install podman debootstrap runc)"
        )


def _pip_config() -> dict[str, str]:
    """The host pip's settings (`pip config list`), e.g. {'find-links': '/opt/wheels', ...}."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    )
    found = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.partition("=")
        found[key.rsplit(".", 1)[-1]] = value.strip().strip("'\"")
    return found


def local_pip_sources() -> tuple[list[str], list[str]]:
    """(`--volume` options, pip build arguments) for the local folders the host's pip reads, if any."""
    config = _pip_config()
    links = [p for p in config.get("find-links", "").split() if Path(p).is_dir()]
    indexes = [u for u in config.get("extra-index-url", "").split() if u.startswith("file://")]
    indexes = [u for u in indexes if Path(u.removeprefix("file://")).is_dir()]
    # A file:// index links its files relative to itself (../../files/…): mount the folder above it.
    mounts = sorted({*links, *(str(Path(u.removeprefix("file://")).parent) for u in indexes)})
    args = []
    if links:
        args += ["--build-arg", f"PIP_FIND_LINKS={' '.join(links)}"]
    if indexes:
        args += ["--build-arg", f"PIP_EXTRA_INDEX_URL={' '.join(indexes)}"]
    if args:
        # The PyTorch index may be out of reach; PyPI's torch files are those the local folders hold.
        args += ["--build-arg", f"TORCH_INDEX_URL={config.get('index-url') or PYPI}"]
    return [opt for m in mounts for opt in ("-v", f"{m}:{m}:ro")], args


def build(target: str, tag: str, timeout: float = 2400) -> str:
    """Build one target of deploy/docker/Dockerfile as `tag`; fail with the build's log if it fails."""
    require_podman()
    base = run([str(REPO / "deploy/docker/make-base.sh"), BASE], timeout=900)
    assert base.returncode == 0, base.stdout + base.stderr
    cert = (
        ["-v", "/etc/ssl/certs:/etc/ssl/certs:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"]
        if Path(CA_BUNDLE).is_file()
        else []
    )
    mounts, pip_args = local_pip_sources()
    print(f"local package sources: {mounts[1::2] or 'none'}")
    proc = run(
        [
            *PODMAN,
            "build",
            "--format",
            "docker",
            "-f",
            "deploy/docker/Dockerfile",
            "--target",
            target,
            "--build-arg",
            f"BASE_IMAGE={BASE}",
            *cert,
            *mounts,
            *pip_args,
            *ULIMITS,
            "-t",
            tag,
            ".",
        ],
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return tag


def inspect(image: str, fmt: str) -> str:
    return subprocess.run(
        [*PODMAN, "image", "inspect", "--format", fmt, image], capture_output=True, text=True, check=True
    ).stdout.strip()


def image_size_mb(image: str) -> float:
    size = int(inspect(image, "{{.Size}}")) / 1e6
    print(f"{image}: {size:.0f} MB")
    return size


def http_status(url: str, headers: dict | None = None, timeout: float = 5) -> int:
    """The HTTP status of a GET (4xx/5xx included); raises OSError when nothing answers."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def wait_answering(url: str, cid: str, timeout: float = 120) -> None:
    """Until the URL answers at all (any HTTP status); fail with the container's log if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            http_status(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    logs = subprocess.run([*PODMAN, "logs", cid], capture_output=True, text=True)
    pytest.fail(f"{url} silent after {timeout:.0f}s; container logs:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
