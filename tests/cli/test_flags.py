"""Every training and serving setting has its flag, and every flag is a setting (`make lint` runs this file).

Both directions: a TrainConfig field (augment.* included) or a serve Settings field without a flag fails
here, and so does a flag that sets nothing. The one deliberate exception is the API token (a variable,
never a flag: flags show in `ps`).
"""

from __future__ import annotations

import argparse
import dataclasses

from seedlings.cli import build_parser
from seedlings.cli.train import NOT_SETTINGS, settings_of
from seedlings.config import AugmentConfig, TrainConfig

SERVE_NOT_FLAGS = {"api_token"}  # SEEDLINGS_API_TOKEN only


def subparser(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def dests(p: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in p._actions if a.dest != "help"}


def train_fields() -> set[str]:
    return ({f.name for f in dataclasses.fields(TrainConfig) if f.name != "augment"}
            | {f"augment.{f.name}" for f in dataclasses.fields(AugmentConfig)})


def test_every_train_setting_has_a_flag_and_every_flag_is_a_setting():
    flags = dests(subparser("train")) - set(NOT_SETTINGS)
    assert train_fields() - flags == set(), "settings without a flag"
    assert flags - train_fields() == set(), "flags that set nothing"


def test_every_serve_setting_has_a_flag_and_every_flag_is_a_setting():
    from seedlings.serving.cli import FLAG_FIELDS
    from seedlings.serving.settings import Settings

    flags = dests(subparser("serve"))
    fields = set(Settings.model_fields) - SERVE_NOT_FLAGS
    assert fields - flags == set(), "settings without a flag"
    assert flags - fields == set(), "flags that set nothing"
    assert set(FLAG_FIELDS) == fields, "serve forwards only FLAG_FIELDS to Settings"


def test_flags_reach_the_config_and_help_shows_the_real_defaults():
    """Each train flag, given a value unlike the default, arrives in TrainConfig under its own name."""
    from seedlings.config import resolve

    p = subparser("train")
    argv = ["--data", "d", "--out", "o", "--pretrained", "--folds", "3", "--fold", "1", "--keep", "best",
            "--grad-clip", "0.5", "--no-channels-last", "--augment-scale-min", "0.7", "--no-augment-flip",
            "--epochs", "4", "--lr", "0.003", "--no-ema", "--balance", "loss"]
    cfg = resolve(None, settings_of(p.parse_args(argv)))
    assert (cfg.grad_clip, cfg.channels_last, cfg.augment.scale_min, cfg.augment.flip) == (0.5, False, 0.7, False)
    assert (cfg.folds, cfg.fold, cfg.keep, cfg.epochs, cfg.lr, cfg.ema, cfg.balance) == (3, 1, "best", 4, 0.003,
                                                                                          False, "loss")
    assert cfg.augment.right_angles  # the fine-tuning recipe's, not given
    helps = {a.dest: a.help for a in p._actions}
    assert helps["epochs"].endswith(f"(default: {TrainConfig.epochs}; fine-tuning: 10)")
    assert helps["grad_clip"].endswith(f"(default: {TrainConfig.grad_clip})")


def test_serve_help_shows_the_real_defaults():
    from seedlings.serving.settings import Settings

    helps = {a.dest: a.help for a in subparser("serve")._actions}
    assert helps["max_body_bytes"].endswith(f"(default: {Settings.model_fields['max_body_bytes'].default:,})")
    assert helps["workers"].endswith("(default: 1)") and helps["tta"].endswith("(default: off)")


def test_the_coverage_check_fails_on_a_setting_without_a_flag(monkeypatch):
    @dataclasses.dataclass
    class Wider(TrainConfig):
        new_setting: int = 1

    monkeypatch.setattr("tests.cli.test_flags.TrainConfig", Wider)
    assert "new_setting" in train_fields() - (dests(subparser("train")) - set(NOT_SETTINGS))
