"""training/fit.py: what a run folder holds and which settings change what."""

from __future__ import annotations

import json

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


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(tmp_path):
    """Exact resume: 1 epoch, then --resume to 3, gives bit for bit the run trained 3 epochs at once
    (weights, EMA, optimizer, step, the sampler's shuffle and the augmentations all continue)."""
    from seedlings.training.fit import train

    data = make_dataset(tmp_path / "d", per_class=5)
    common = {"data": str(data), "image_size": 24, "batch_size": 8, "threads": 1, "mixup": 0.2, "cutmix": 1.0,
              "balance": "sampler", "cache_dir": str(tmp_path / "cache"), "progress": False}
    whole = train(out=str(tmp_path / "whole"), epochs=3, **common)
    train(out=str(tmp_path / "parts"), epochs=1, **common)
    parts = train(out=str(tmp_path / "parts"), epochs=3, resume=True, **common)
    assert (whole / "weights.safetensors").read_bytes() == (parts / "weights.safetensors").read_bytes()
    assert _rows(whole) == _rows(parts)


def test_a_resumed_runs_wall_time_counts_its_earlier_sessions(tmp_path, monkeypatch):
    """model.json's training.wall_s is the whole run's, not only the last session's (a finished run
    resumed to refit its calibration would otherwise say it trained in 0 minutes)."""
    import time

    import seedlings.training.fit as fit

    data = make_dataset(tmp_path / "d", per_class=3)
    common = {"data": str(data), "out": str(tmp_path / "run"), "image_size": 24, "batch_size": 8, "threads": 1,
              "cache_dir": str(tmp_path / "cache"), "progress": False}
    real = fit.train_one_epoch
    with monkeypatch.context() as m:
        m.setattr(fit, "train_one_epoch", lambda *a: time.sleep(2.0) or real(*a))  # a slow first session
        fit.train(epochs=1, **common)
    run = fit.train(epochs=2, resume=True, **common)
    wall = json.loads((run / "model.json").read_text())["training"]["wall_s"]
    assert wall >= 2.0, wall


def _rows(run):
    """metrics.jsonl without its timings."""
    return [{k: v for k, v in json.loads(line).items() if k not in ("epoch_s", "train_images_per_s")}
            for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_cache_is_prepared_with_the_runs_spec(tmp_path, monkeypatch):
    """The config builds the preprocessing spec before the data is prepared, and prepare takes it."""
    import seedlings.training.fit as fit
    from seedlings.artifact import ModelFile
    from seedlings.config import TrainConfig

    seen = []
    real = fit.prepare
    monkeypatch.setattr(fit, "prepare", lambda root, spec, **kw: seen.append(spec) or real(root, spec, **kw))
    data = make_dataset(tmp_path / "d", per_class=3)
    run = fit.train(data=str(data), out=str(tmp_path / "run"), epochs=1, image_size=24, batch_size=8, threads=1,
                    model="efficientnet_lite0", ema=False, cache_dir=str(tmp_path / "cache"), progress=False)
    spec = TrainConfig(data="d", out="o", model="efficientnet_lite0", image_size=24).validate().preprocess_spec()
    assert seen == [spec] and spec.mean == (0.5, 0.5, 0.5)
    assert ModelFile.load(run).preprocess == spec
