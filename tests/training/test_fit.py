"""training/fit.py: what a run folder holds and which settings change what."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import SYNTH_CLASSES, make_dataset


def test_split_seed_keeps_the_split_while_the_seed_changes_the_weights(trained_run, second_run):
    from seedlings.models.checkpoint import load_weights

    assert (trained_run / "split.json").read_text() == (second_run / "split.json").read_text()
    a, b = load_weights(trained_run / "weights.safetensors"), load_weights(second_run / "weights.safetensors")
    assert any(not np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


@pytest.mark.parametrize("balance", ["loss", "sampler"])
def test_balanced_training_runs_and_is_recorded(tmp_path, balance):
    """--balance loss weights the loss by class; --balance sampler draws rare classes more often."""
    import yaml

    from seedlings.training.fit import train

    data = make_dataset(tmp_path / "d", per_class=4)
    extra = make_dataset(tmp_path / "more", per_class=12, classes=SYNTH_CLASSES[:1], seed=3)
    for f in (extra / SYNTH_CLASSES[0]).iterdir():
        f.rename(data / SYNTH_CLASSES[0] / f"more_{f.name}")  # class 0 is four times the others
    run = train(data=str(data), out=str(tmp_path / "run"), epochs=1, image_size=24, batch_size=8, threads=1,
                balance=balance, cache_dir=str(tmp_path / "cache"), progress=False)
    assert yaml.safe_load((run / "config.yaml").read_text())["balance"] == balance
    assert (run / "model.json").is_file() and (run / "weights.safetensors").is_file()
