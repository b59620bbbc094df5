from __future__ import annotations

import subprocess
import sys

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
    assert cfg.min_steps == 200  # a few photos a species: at least 200 optimizer steps (model card, few photos)
    flags = resolve(None, {"data": "d", "out": "o", "pretrained": True, "epochs": 3, "model": "efficientnet_lite1"})
    assert (flags.epochs, flags.model, flags.lr) == (3, "efficientnet_lite1", FINETUNE["lr"])
    path = tmp_path / "c.yaml"
    path.write_text("pretrained: true\nimage_size: 96\n")
    from_file = resolve(str(path), {"data": "d", "out": "o"})
    assert from_file.image_size == 96 and from_file.epochs == FINETUNE["epochs"]
    scratch = resolve(None, {"data": "d", "out": "o"})
    assert scratch.model == "resnet10t" and scratch.epochs == 150 and not scratch.pretrained
    assert scratch.min_steps == 0  # the from-scratch recipe is counted in epochs


def test_the_config_builds_the_preprocessing_spec_from_its_size_and_backbone():
    from seedlings.preprocess import IMAGENET_MEAN, IMAGENET_STD

    lite = resolve(None, {"data": "d", "out": "o", "model": "efficientnet_lite0", "image_size": 96}).preprocess_spec()
    assert (lite.image_size, lite.mean, lite.std, lite.interpolation) == (96, (0.5,) * 3, (0.5,) * 3, "bilinear")
    plain = resolve(None, {"data": "d", "out": "o"}).preprocess_spec()
    assert (plain.image_size, plain.mean, plain.std) == (64, IMAGENET_MEAN, IMAGENET_STD)


def _model_folder(path, backbone):
    from seedlings.artifact import ModelFile
    from seedlings.preprocess import PreprocessSpec

    ModelFile(name="m", backbone=backbone, classes=["a", "b"], preprocess=PreprocessSpec(32)).save(path)
    return str(path)


def test_init_implies_its_models_backbone_and_refuses_another_or_an_ensemble(tmp_path):
    folder = _model_folder(tmp_path / "m", "resnet18d")
    assert resolve(None, {"data": "d", "out": "o", "init": folder}).model == "resnet18d"
    with pytest.raises(UsageError, match="--init .* is a resnet18d; omit --model"):
        resolve(None, {"data": "d", "out": "o", "init": folder, "model": "resnet14t"})
    with pytest.raises(SeedlingsError, match="an ensemble"):
        resolve(None, {"data": "d", "out": "o", "init": _model_folder(tmp_path / "e", "resnet10t+resnet18d")})


def test_settings_need_no_torch():
    """config.py imports the registry at module level: validating settings must not load torch or timm."""
    code = ("import sys; from seedlings.config import resolve; resolve(None, {'data': 'd', 'out': 'o'}); "
            "print(sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_validate_returns_a_checked_copy_and_changes_nothing():
    from seedlings.config import TrainConfig

    cfg = TrainConfig(data="d", out="o", model="EfficientNet_Lite0")
    before = cfg.to_dict()
    checked = cfg.validate()
    assert cfg.to_dict() == before and checked is not cfg
    assert checked.model == "efficientnet_lite0"
