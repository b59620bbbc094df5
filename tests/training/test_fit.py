"""training/fit.py: what a run folder holds and which settings change what."""

from __future__ import annotations

import numpy as np


def test_split_seed_keeps_the_split_while_the_seed_changes_the_weights(trained_run, second_run):
    from seedlings.models.checkpoint import load_weights

    assert (trained_run / "split.json").read_text() == (second_run / "split.json").read_text()
    a, b = load_weights(trained_run / "weights.safetensors"), load_weights(second_run / "weights.safetensors")
    assert any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
