"""runs.py: `seedlings runs compare` and `runs sweep-item` on tiny runs."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from seedlings.cli import COMMANDS, build_parser
from seedlings.errors import SeedlingsError, UsageError
from seedlings.runs import compare, load_experiment


def _parse(argv):
    return COMMANDS["runs"].run, build_parser().parse_args(argv)


def _sweep_file(path, dataset):
    path.write_text(f"""
defaults: {{dataset: {dataset.name}, epochs: 2, image_size: 32, batch_size: 16, threads: 1}}
experiments:
  - {{name: tiny-a, model: resnet10t}}
  - {{name: tiny-b, model: resnet10t, lr: 0.01, seed: 1}}
""")
    return path


def test_sweep_item_trains_then_is_idempotent(dataset, tmp_path, capsys):
    exps = _sweep_file(tmp_path / "exps.yaml", dataset)
    handler, args = _parse(
        [
            "runs",
            "sweep-item",
            "--experiments",
            str(exps),
            "--index",
            "1",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--data-root",
            str(dataset.parent),
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert handler(args) == 0
    meta = json.loads((tmp_path / "runs" / "tiny-b" / "model.json").read_text())
    assert meta["training"]["epochs"] == 2 and meta["image_size"] == 32
    assert not (tmp_path / "runs" / "tiny-a").exists()
    assert handler(args) == 0
    assert "already finished" in capsys.readouterr().err


def test_experiment_errors_are_for_people(dataset, tmp_path):
    exps = _sweep_file(tmp_path / "exps.yaml", dataset)
    with pytest.raises(UsageError, match="has 2 experiment"):
        load_experiment(str(exps), 2)
    (tmp_path / "bad.yaml").write_text("experiments: nope\n")
    with pytest.raises(SeedlingsError, match="list `experiments`"):
        load_experiment(str(tmp_path / "bad.yaml"), 0)


def test_compare_writes_leaderboard(trained_run, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(trained_run, root / "a")
    shutil.copytree(trained_run, root / "sweep" / "b")
    meta = json.loads((root / "a" / "model.json").read_text())
    meta["metrics"]["f1_micro"] = 1.5  # sorts first
    (root / "a" / "model.json").write_text(json.dumps(meta))
    (root / "sweep" / "c").mkdir()
    (root / "sweep" / "c" / "checkpoint.safetensors").write_bytes(b"")
    out = io.StringIO()
    assert compare(str(root), str(tmp_path / "board"), file=out) == 0
    text = out.getvalue()
    assert "resnet10t" in text and "sweep/b" in text
    md = (tmp_path / "board" / "leaderboard.md").read_text()
    assert md.index("| 1 | a |") < md.index("| 2 | sweep/b |")
    assert "Not finished yet: sweep/c" in md
    assert (tmp_path / "board" / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_without_runs_says_so(tmp_path):
    with pytest.raises(SeedlingsError, match="no finished run folder"):
        compare(str(tmp_path))
    with pytest.raises(UsageError, match="no such folder"):
        compare(str(tmp_path / "missing"))



def test_shipped_sweep_files_resolve():
    """Every experiment of every sweep file in bench/recipes/ resolves to valid training settings (a misspelt
    key would only show on the lent GPU); in a K-fold file, a recipe's folds differ in nothing but the fold."""
    from pathlib import Path

    import yaml

    from seedlings.runs import experiment_overrides, sweep_config

    files = sorted((Path(__file__).resolve().parents[1] / "bench" / "recipes").glob("*.yaml"))
    assert files
    for path in files:
        n = len(yaml.safe_load(path.read_text())["experiments"])
        recipes: dict[str, list] = {}
        for i in range(n):
            cfg = sweep_config(experiment_overrides(load_experiment(str(path), i), "R", "D"), f"{path.name}[{i}]")
            if cfg.fold is not None:
                root, _, leaf = cfg.out.rpartition("/")
                assert leaf == f"fold-{cfg.fold}", f"{path.name}[{i}]: fold {cfg.fold} runs in {cfg.out}"
                settings = {k: v for k, v in cfg.to_dict().items() if k not in ("out", "fold")}
                recipes.setdefault(root, []).append((cfg.fold, settings))
        for root, folds in recipes.items():
            assert all(s == folds[0][1] for _, s in folds), f"{path.name}: {root}'s folds differ in their settings"
            assert len({f for f, _ in folds}) == len(folds), f"{path.name}: {root} names a fold twice"
