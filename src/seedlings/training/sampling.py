"""Class-balanced sampling that also works across torchrun processes."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


class WeightedDistributedSampler(Sampler[int]):
    """Draw each epoch's indices with probability ∝ 1/class count; each process takes its slice."""

    def __init__(self, labels: np.ndarray, num_classes: int, world_size: int, rank: int, seed: int):
        counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
        self.weights = torch.tensor(1.0 / counts[labels], dtype=torch.float64)
        self.world_size, self.rank, self.seed, self.epoch = world_size, rank, seed, 0
        self.per_rank = len(labels) // world_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_rank

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        total = self.per_rank * self.world_size
        idx = torch.multinomial(self.weights, total, replacement=True, generator=gen)
        return iter(idx[self.rank::self.world_size].tolist())
