"""Fixtures of the deploy tests: a tiny synthetic dataset and tiny finished runs, made once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SERVE_IMAGE = "localhost/seedlings-serve:test"
TRAIN_IMAGE = "localhost/seedlings-train:test"
CLASSES = ["Charlock", "Maize", "Sugar beet"]
TINY_TRAIN = ["--epochs", "2", "--image-size", "32", "--batch-size", "16", "--threads", "1"]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def skip_or_fail(reason: str) -> None:
    """Skip here when a tool is missing, but fail in CI: CI must actually run these tests."""
    if in_ci():
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def make_dataset(root: Path, per_class: int = 12, size: int = 40) -> Path:
    """Three colour-coded classes, so a tiny model learns something in two epochs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            img[..., c] += 150
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def seedlings_cmd() -> list[str]:
    exe = VENV_BIN / "seedlings"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "seedlings"]


def child_env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("RANK", "WORLD_SIZE", "LOCAL_", "MASTER_"))
    }
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}, **extra)
    return env


@pytest.fixture(scope="session")
def serve_image() -> str:
    """The serve image, built once per session for every test that runs it (test_image, test_kube_play)."""
    from .podman import build  # podman.py imports this module

    return build("serve", SERVE_IMAGE)


@pytest.fixture(scope="session")
def train_image() -> str:
    """The train image (also the batch-predict Job's), built once per session."""
    from .podman import build

    return build("train", TRAIN_IMAGE)


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "seedlings")


@pytest.fixture(scope="session")
def trained_run(dataset, tmp_path_factory) -> Path:
    """One finished run folder (2 epochs, 32 px): a few seconds of CPU."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    cache = tmp_path_factory.mktemp("cache")
    proc = subprocess.run(
        [
            *seedlings_cmd(),
            "train",
            "--data",
            str(dataset),
            "--out",
            str(run),
            "--cache-dir",
            str(cache),
            *TINY_TRAIN,
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def which(tool: str) -> str | None:
    return shutil.which(tool) or (str(VENV_BIN / tool) if (VENV_BIN / tool).exists() else None)
