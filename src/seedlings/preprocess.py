"""The preprocessing spec that travels with a model, and its numpy/PIL implementation.

Training caches images with :func:`resize_square` and normalises them with the same mean and
std; serving calls :func:`preprocess` on uploads. No torch here: the service imports this.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_INTERPOLATION = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                  "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS}
INTERPOLATIONS = tuple(_INTERPOLATION)


IMAGE_SIZES = (16, 1024)  # the input sizes, in pixels, a model may have: training, the cache and model.json


@dataclass(frozen=True)
class PreprocessSpec:
    """Resize the short side to ``image_size``, centre-crop a square, scale to [0, 1], normalise.

    No default size: a model's spec comes from its run's config (config.TrainConfig.image_size, the one
    default) or from its model.json."""

    image_size: int
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)
    interpolation: str = "bilinear"
    resize: str = "shorter_side_center_crop"
    layout: str = "NCHW"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessSpec:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(float(v) for v in known[key])
        return cls(**known)


def resize_square(img: Image.Image, size: int, interpolation: str = "bilinear") -> np.ndarray:
    """An RGB image to a ``size × size × 3`` uint8 array (short side resized, centre crop)."""
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), _INTERPOLATION[interpolation])
    left, top = (nw - size) // 2, (nh - size) // 2
    if (nw, nh) != (size, size):
        img = img.crop((left, top, left + size, top + size))
    return np.asarray(img, dtype=np.uint8)


def normalize(batch_hwc: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """uint8 N×H×W×3 → float32 N×3×H×W, scaled and normalised as the model expects."""
    x = batch_hwc.astype(np.float32) * np.float32(1 / 255)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def preprocess(images: list[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    """RGB PIL images → the model's float32 input batch."""
    arrays = [resize_square(im, spec.image_size, spec.interpolation) for im in images]
    return normalize(np.stack(arrays), spec)


def dihedral_views(batch_hwc: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations/flips of a N×H×W×C batch: test-time augmentation for top-down photos."""
    views = []
    for flip in (False, True):
        base = batch_hwc[:, :, ::-1] if flip else batch_hwc
        for k in range(4):
            views.append(np.ascontiguousarray(np.rot90(base, k, axes=(1, 2))))
    return views
