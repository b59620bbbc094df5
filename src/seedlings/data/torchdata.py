"""Torch side of the data: batches from the prepared cache, augmented as whole batches.

The cache holds uint8 images at the training size; augmentation (any-angle rotation, flips,
zoom, shift, colour jitter) runs on a batch tensor with one affine grid, so the loader costs
a small fraction of a training step and never decodes an original again.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from seedlings.preprocess import PreprocessSpec

if TYPE_CHECKING:  # the data layer sits below config: annotations only
    from seedlings.config import AugmentConfig


class CachedImages(Dataset):
    """Rows of the memory-mapped cache as (uint8 H×W×3 tensor, label), or (image, label, soft label) when
    ``soft`` gives a probability row per cache row (``train --teacher``): it travels with its image."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, rows: np.ndarray, soft: np.ndarray | None = None):
        self.images, self.labels, self.rows, self.soft = images, labels, np.asarray(rows), soft

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        r = int(self.rows[i])
        image, label = torch.from_numpy(np.array(self.images[r])), int(self.labels[r])
        return (image, label) if self.soft is None else (image, label, torch.from_numpy(self.soft[r]))


def to_model_input(batch: torch.Tensor, spec: PreprocessSpec, channels_last: bool = False) -> torch.Tensor:
    """uint8 N×H×W×3 → normalised float N×3×H×W: the eval transform (serving does the same in numpy)."""
    return normalise(batch.permute(0, 3, 1, 2).float().mul_(1 / 255), spec, channels_last)


def augment(batch: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """uint8 N×H×W×3 → augmented float N×3×H×W in [0, 1], on the batch's device.

    Random parameters come from ``generator`` on the CPU, so a run draws the same augmentations
    whether the batch is warped on the CPU or on a GPU.
    """
    x = batch.permute(0, 3, 1, 2).float().mul_(1 / 255)
    n = x.shape[0]
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(x.device)  # noqa: E731
    if cfg.rotate:
        angle = rand(n) * 2 * math.pi
    elif cfg.right_angles:
        angle = (rand(n) * 4).floor() * (math.pi / 2)
    else:
        angle = torch.zeros(n, device=x.device)
    scale = cfg.scale_min + rand(n) * (cfg.scale_max - cfg.scale_min)
    ones = torch.ones(n, device=x.device)
    flip_x = torch.where(rand(n) < 0.5, -ones, ones) if cfg.flip else ones
    flip_y = torch.where(rand(n) < 0.5, -ones, ones) if cfg.flip else ones
    shift = (rand(n, 2) * 2 - 1) * cfg.translate * 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip_x, -sin * flip_y, shift[:, 0]], 1),
                         torch.stack([sin * flip_x, cos * flip_y, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _colour_jitter(x, cfg, rand).clamp_(0, 1)


def _colour_jitter(x: torch.Tensor, cfg: AugmentConfig, rand) -> torch.Tensor:
    n = x.shape[0]
    factor = lambda amount: 1 + (rand(n, 1, 1, 1) * 2 - 1) * amount  # noqa: E731
    if cfg.brightness:
        x = x * factor(cfg.brightness)
    if cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * factor(cfg.contrast) + mean
    if cfg.saturation:
        grey = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - grey) * factor(cfg.saturation) + grey
    return x


def normalise(x: torch.Tensor, spec: PreprocessSpec, channels_last: bool) -> torch.Tensor:
    """Float N×3×H×W in [0, 1] → normalised with the spec's mean and std, on the batch's device."""
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
