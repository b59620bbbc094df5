"""training/sampling.py: class-balanced sampling, split across processes."""

from __future__ import annotations

import numpy as np

from seedlings.training.sampling import WeightedDistributedSampler


def test_rare_classes_are_drawn_as_often_as_common_ones():
    labels = np.array([0] * 900 + [1] * 100)
    sampler = WeightedDistributedSampler(labels, 2, world_size=1, rank=0, seed=0)
    drawn = labels[list(sampler)]
    assert len(drawn) == 1000 and 0.4 < drawn.mean() < 0.6


def test_processes_take_disjoint_slices_of_one_draw_and_epochs_differ():
    labels = np.arange(10) % 2
    ranks = [WeightedDistributedSampler(labels, 2, world_size=2, rank=r, seed=1) for r in range(2)]
    assert [len(s) for s in ranks] == [5, 5]
    first = [list(s) for s in ranks]
    for s in ranks:
        s.set_epoch(1)
    assert [list(s) for s in ranks] != first
    assert list(WeightedDistributedSampler(labels, 2, 2, 0, seed=1)) == first[0]  # reproducible
