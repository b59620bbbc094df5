from __future__ import annotations

import pytest

from seedlings.config import resolve
from seedlings.errors import SeedlingsError, UsageError


def test_defaults_then_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 7\nlr: 0.01\naugment:\n  rotate: false\n")
    cfg = resolve(str(f), {"data": "d", "out": "o", "lr": 0.5, "epochs": None})
    assert cfg.epochs == 7 and cfg.lr == 0.5 and cfg.augment.rotate is False and cfg.augment.flip is True
    assert cfg.model == "resnet10t" and cfg.image_size == 64


@pytest.mark.parametrize("text,match", [("epochs: [1", "not valid YAML"), ("- 1\n", "expected a mapping"),
                                        ("epochz: 3\n", "unknown setting"), ("augment:\n  spin: 1\n", "augment.spin")])
def test_bad_yaml_is_explained(tmp_path, text, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(SeedlingsError, match=match):
        resolve(str(f), {"data": "d", "out": "o"})


def test_bad_values_are_usage_errors():
    with pytest.raises(UsageError, match="--epochs 0"):
        resolve(None, {"data": "d", "out": "o", "epochs": 0})
    with pytest.raises(UsageError, match="unknown backbone.*resnet10t"):
        resolve(None, {"data": "d", "out": "o", "model": "alexnet9000"})
    with pytest.raises(UsageError, match="--image-size 97: resnet10t_s2d folds 2×2 .* multiple of 2"):
        resolve(None, {"data": "d", "out": "o", "image_size": 97, "model": "resnet10t_s2d"})
    assert resolve(None, {"data": "d", "out": "o", "image_size": 97}).image_size == 97
    with pytest.raises(UsageError, match="--data is required"):
        resolve(None, {"out": "o"})


def test_pretrained_runs_take_the_fine_tuning_recipe_unless_told_otherwise(tmp_path):
    from seedlings.config import FINETUNE, resolve

    cfg = resolve(None, {"data": "d", "out": "o", "pretrained": True})
    assert (cfg.model, cfg.image_size, cfg.epochs, cfg.lr) == (FINETUNE["model"], FINETUNE["image_size"],
                                                               FINETUNE["epochs"], FINETUNE["lr"])
    flags = resolve(None, {"data": "d", "out": "o", "pretrained": True, "epochs": 3, "model": "efficientnet_lite1"})
    assert (flags.epochs, flags.model, flags.lr) == (3, "efficientnet_lite1", FINETUNE["lr"])
    path = tmp_path / "c.yaml"
    path.write_text("pretrained: true\nimage_size: 96\n")
    from_file = resolve(str(path), {"data": "d", "out": "o"})
    assert from_file.image_size == 96 and from_file.epochs == FINETUNE["epochs"]
    scratch = resolve(None, {"data": "d", "out": "o"})
    assert scratch.model == "resnet10t" and scratch.epochs == 150 and not scratch.pretrained
