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



def _train_recording_weights(monkeypatch, **settings) -> list[dict]:
    """Train, keeping a copy of the network's weights and buffers after each epoch."""
    import seedlings.training.fit as fit

    after = []

    def epoch_then_copy(state, advance=None):
        stats = real(state, advance)
        after.append({k: v.detach().clone() for k, v in state.raw_model.state_dict().items()})
        return stats

    real = fit.train_one_epoch
    monkeypatch.setattr(fit, "train_one_epoch", epoch_then_copy)
    fit.train(**settings)
    return after


def _moved(weights: dict, start: dict) -> tuple[set, set]:
    """The classifier's and the other floating-point tensors (weights, batch-norm statistics) that differ."""
    import torch

    changed = {k for k, v in start.items() if v.is_floating_point() and not torch.equal(weights[k], v)}
    return {k for k in changed if k.startswith("fc.")}, {k for k in changed if not k.startswith("fc.")}


def test_freeze_epochs_hold_the_learned_layers_and_their_statistics_then_release_them(tmp_path, trained_run,
                                                                                       monkeypatch):
    """--init with --freeze-epochs 1: after the first epoch only the classifier has moved; every other
    weight and running statistic is the init's, bit for bit. The second epoch moves them too. Without
    --freeze-epochs the first epoch already moves them (else this test could not fail)."""
    from seedlings.models.checkpoint import load_weights

    start = load_weights(trained_run / "weights.safetensors")
    data = make_dataset(tmp_path / "d", per_class=4)
    common = {"data": str(data), "init": str(trained_run), "epochs": 2, "min_steps": 0, "image_size": 32,
              "batch_size": 8, "threads": 1, "warmup_epochs": 0.5, "cache_dir": str(tmp_path / "cache"),
              "progress": False}
    frozen = _train_recording_weights(monkeypatch, out=str(tmp_path / "frozen"), freeze_epochs=1, **common)
    head, body = _moved(frozen[0], start)
    assert head and not body, sorted(body)[:5]
    head, body = _moved(frozen[1], start)
    assert any(k.endswith("running_mean") for k in body) and any(k.endswith("conv1.0.weight") for k in body)

    free = _train_recording_weights(monkeypatch, out=str(tmp_path / "free"), **common)
    assert _moved(free[0], start)[1]


def test_freeze_epochs_need_learned_layers_and_an_epoch_left():
    from seedlings.config import TrainConfig
    from seedlings.errors import UsageError

    with pytest.raises(UsageError, match="--freeze-epochs 1: .*--pretrained, --weights or --init"):
        TrainConfig(data="d", out="o", epochs=3, freeze_epochs=1).validate()
    with pytest.raises(UsageError, match="--freeze-epochs 3: must be in \\[0, --epochs\\)"):
        TrainConfig(data="d", out="o", epochs=3, freeze_epochs=3, pretrained=True,
                    model="efficientnet_lite0").validate()


def test_backbone_lr_scales_only_the_learned_layers(tmp_path, trained_run):
    """--backbone-lr applies to the layers that start from learned weights, never to the new classifier,
    and not at all to a network trained from scratch."""
    from seedlings.config import TrainConfig
    from seedlings.models import create_model
    from seedlings.training.fit import param_groups

    model = create_model("resnet10t", 3)
    learned = param_groups(model, TrainConfig(init=str(trained_run), backbone_lr=0.3))
    assert [(g["lr_scale"], g["learned"]) for g in learned] == [(0.3, True), (1.0, False)]
    assert {id(p) for p in learned[1]["params"]} == {id(p) for p in model.get_classifier().parameters()}
    scratch = param_groups(model, TrainConfig(backbone_lr=0.3))
    assert [g["lr_scale"] for g in scratch] == [1.0, 1.0] and not any(g["learned"] for g in scratch)


@pytest.mark.parametrize("n_train, min_steps, expected", [
    (192, 200, (16, 17)),  # 16 photos of 12 species: 12 steps an epoch, 17 epochs
    (60, 200, (8, 29)),  # never under 8 images a batch
    (3424, 200, (48, 10)),  # the full data set: the recipe as it is (710 steps)
    (192, 0, (48, 10)),  # --min-steps 0: off
])
def test_small_data_sets_get_a_smaller_batch_and_more_epochs(n_train, min_steps, expected, capsys):
    from seedlings.config import TrainConfig
    from seedlings.training import distributed as D
    from seedlings.training.fit import fit_to_data

    cfg = TrainConfig(data="d", out="o", epochs=10, batch_size=48, min_steps=min_steps)
    fitted = fit_to_data(cfg, n_train, D.DistEnv())
    assert (fitted.batch_size, fitted.epochs) == expected
    assert (n_train // fitted.batch_size) * fitted.epochs >= min_steps
    said = capsys.readouterr().err  # the run says what it changed, and how to keep the recipe's values
    changed = expected != (48, 10)
    assert (f"batch {expected[0]} and {expected[1]} epochs" in said) == changed
    assert ("--min-steps 0 keeps batch 48 and 10 epochs" in said) == changed
