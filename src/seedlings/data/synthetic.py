"""Tiny synthetic seedling folders: coloured shapes on soil-like noise, one sub-folder per class.

For demos, notebooks and smoke tests that must run anywhere without the real photos. Each class has
its own shape and colour, so a small model learns them in an epoch or two; the numbers say nothing
about real seedlings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DEFAULT_CLASSES = ("Black-grass", "Charlock", "Common Chickweed", "Sugar beet")
_COLOURS = [(40, 200, 60), (200, 220, 40), (150, 60, 200), (230, 120, 40), (60, 160, 220), (240, 240, 240)]
_SHAPES = ("disc", "cross", "ring", "square", "bar")


def synthetic_image(label: int, rng: np.random.Generator, size: int = 48) -> Image.Image:
    """One RGB image of class ``label``: its shape and colour, jittered, on brown noise."""
    base = rng.integers(60, 110, (size, size, 3), dtype=np.uint8)
    base[..., 2] //= 2  # less blue: soil, not grey
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    c = size // 2 + int(rng.integers(-size // 10, size // 10 + 1))
    r = max(3, size // 4 + int(rng.integers(-size // 14, size // 14 + 1)))
    w = max(2, size // 14)
    colour = _COLOURS[label % len(_COLOURS)]
    shape = _SHAPES[(label // len(_COLOURS) + label) % len(_SHAPES)]
    box = (c - r, c - r, c + r, c + r)
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "cross":
        draw.rectangle((c - r, c - w, c + r, c + w), fill=colour)
        draw.rectangle((c - w, c - r, c + w, c + r), fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=w + 1)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.rectangle((c - r, c - w, c + r, c + w), fill=colour)
    return img


def make_synthetic_dataset(root: str | Path, classes=None, per_class: int = 16, size: int = 48,
                           seed: int = 0) -> Path:
    """Write ``per_class`` PNGs per class under ``root/<class>/``; returns ``root``. Deterministic per seed."""
    if per_class < 1 or size < 8:
        raise ValueError(f"per_class {per_class} must be ≥ 1 and size {size} ≥ 8")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for label, name in enumerate(classes or DEFAULT_CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            synthetic_image(label, rng, size).save(folder / f"synthetic_{i:03d}.png")
    return root
