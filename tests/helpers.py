"""Test helpers: tiny synthetic seedling folders (never copies of the real data), the real data's path and
a free port. bench/serve_bench.py imports this module too (one definition of each), so pytest is imported
only where a helper needs it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"
SYNTH_CLASSES = ["Black-grass", "Common Chickweed", "Sugar beet"]


def synthetic_image(label: int, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """Soil-like noise with a class-coloured 'plant': a disc, a cross or a ring."""
    base = rng.integers(60, 110, (size, size, 3), dtype=np.uint8)
    base[..., 2] //= 2
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    c = size // 2 + int(rng.integers(-4, 5))
    r = size // 4 + int(rng.integers(-3, 4))
    colour = [(40, 200, 60), (200, 220, 40), (150, 60, 200)][label % 3]
    if label % 3 == 0:
        draw.ellipse((c - r, c - r, c + r, c + r), fill=colour)
    elif label % 3 == 1:
        draw.rectangle((c - r, c - 3, c + r, c + 3), fill=colour)
        draw.rectangle((c - 3, c - r, c + 3, c + r), fill=colour)
    else:
        draw.ellipse((c - r, c - r, c + r, c + r), outline=colour, width=4)
    return img


def make_dataset(root: Path, per_class: int = 16, classes=SYNTH_CLASSES, seed: int = 0, size: int = 48) -> Path:
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            synthetic_image(label, rng, size).save(d / f"img_{i:03d}.png")
    return root


def require_tool(name: str) -> str:
    """Path of an outside tool; skip without it on a user's machine, fail under CI=true."""
    import pytest  # lazy: the bench imports this module without pytest installed

    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{name} is required in CI (.ci/run installs it)")
    pytest.skip(f"{name} not installed")


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seedlings_cli(*args, **kw) -> subprocess.CompletedProcess:
    """``python -m seedlings ARGS`` in a fresh interpreter, as a user runs it: exit code, stdout, stderr."""
    return subprocess.run([sys.executable, "-m", "seedlings", *map(str, args)], capture_output=True, text=True, **kw)
