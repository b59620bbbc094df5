"""Out-of-distribution probes for the "unknown" flag: images that are certainly not seedlings.

Noise, flat colours, gradients, geometric shapes and rendered text, generated (nothing to
download). The false-accept rate is the share of these the model does NOT flag unknown; the
false-reject rate is the share of real validation images it does flag.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

KINDS = ("noise", "flat", "gradient", "shapes", "text")


def _noise(rng, size):
    return rng.integers(0, 256, (size, size, 3), dtype=np.uint8)


def _flat(rng, size):
    return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()


def _gradient(rng, size):
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, size)[:, None, None]
    img = (a * (1 - t) + b * t).astype(np.uint8)
    img = np.broadcast_to(img, (size, size, 3))
    return np.ascontiguousarray(np.rot90(img, int(rng.integers(4))))


def _shapes(rng, size):
    img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 6))):
        x0, y0 = rng.integers(0, size, 2)
        x1, y1 = x0 + rng.integers(10, size // 2), y0 + rng.integers(10, size // 2)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        [draw.rectangle, draw.ellipse][int(rng.integers(2))]((x0, y0, x1, y1), fill=colour)
    return np.asarray(img)


def _text(rng, size):
    img = Image.new("RGB", (size, size), (255, 255, 255) if rng.random() < 0.7 else (30, 30, 30))
    draw = ImageDraw.Draw(img)
    words = ["seedling", "invoice", "hello world", "2026-11-28", "Lorem ipsum", "PLANT?", "12 species"]
    font = ImageFont.load_default(size=int(rng.integers(12, 24)))
    for row in range(0, size, int(rng.integers(16, 28))):
        draw.text((int(rng.integers(0, 10)), row), str(rng.choice(words)), fill=(0, 0, 0), font=font)
    return np.asarray(img)


def generate(n_per_kind: int = 40, *, size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """uint8 N×S×S×3 arrays per kind."""
    rng = np.random.default_rng(seed)
    makers = {"noise": _noise, "flat": _flat, "gradient": _gradient, "shapes": _shapes, "text": _text}
    return {k: np.stack([makers[k](rng, size) for _ in range(n_per_kind)]) for k in KINDS}


def false_accept(model, ood: dict[str, np.ndarray]) -> float:
    """The share of the generated images the model's ``unknown`` rule lets through (all kinds together)."""
    return float(np.concatenate([~model.unknown(*model.assess(images)) for images in ood.values()]).mean())


def unknown_rates(model, val_images: np.ndarray, ood: dict[str, np.ndarray], tta: bool = False) -> dict:
    """False-reject on validation images and false-accept per OOD kind, for the model's ``unknown``
    rule; also each signal on its own (max probability, feature distance) to show what each adds."""
    rule = model.file.unknown

    def signals(images):
        probs, dist = model.assess(images, tta=tta)
        return (rule.flags(probs, dist), *rule.signals(probs, dist))

    val_all, val_conf, val_dist = signals(val_images)
    out = {"threshold": rule.threshold, "distance_threshold": rule.distance_threshold, "tta": tta,
           "false_reject_validation": float(val_all.mean()),
           "false_reject_validation_max_probability": float(val_conf.mean()),
           "false_reject_validation_distance": None if val_dist is None else float(val_dist.mean()),
           "false_accept": {}, "false_accept_max_probability": {}, "false_accept_distance": {}}
    accepted = []
    for kind, images in ood.items():
        flags, conf_flag, dist_flag = signals(images)
        out["false_accept"][kind] = float((~flags).mean())
        out["false_accept_max_probability"][kind] = float((~conf_flag).mean())
        out["false_accept_distance"][kind] = None if dist_flag is None else float((~dist_flag).mean())
        accepted.append(~flags)
    out["false_accept_all"] = float(np.concatenate(accepted).mean())
    return out
