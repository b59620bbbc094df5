"""K-fold runs: each image validated once, by a model that did not train on it; resumable; one oof.csv."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import pytest
from tests.helpers import make_dataset

from seedlings.data import Split, fold_split, stratified_folds
from seedlings.errors import UsageError


def test_folds_cover_every_file_once_and_keep_the_classes_balanced():
    files = [f"c{c}/{i}.png" for c in range(3) for i in range(10 + 7 * c)]
    labels = [int(f[1]) for f in files]
    folds = stratified_folds(files, labels, 5, seed=3)
    assert sorted(f for part in folds for f in part) == sorted(files)
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    for c in range(3):
        per_fold = [sum(f.startswith(f"c{c}/") for f in part) for part in folds]
        assert max(per_fold) - min(per_fold) <= 1, per_fold
    assert stratified_folds(files, labels, 5, seed=3) == folds  # deterministic
    assert stratified_folds(files, labels, 5, seed=4) != folds
    split = fold_split(files, labels, 5, 2, seed=3)
    assert split.val == folds[2] and not set(split.val) & set(split.train)
    assert (split.folds, split.fold) == (5, 2)


def test_a_fold_split_file_names_its_fold(tmp_path):
    split = fold_split([f"a/{i}" for i in range(6)], [0] * 6, 3, 1)
    split.save(tmp_path / "split.json")
    saved = json.loads((tmp_path / "split.json").read_text())
    assert (saved["folds"], saved["fold"]) == (3, 1)
    assert Split.load(tmp_path / "split.json") == split


@pytest.mark.parametrize("settings, message", [
    ({"fold": 1}, "needs --folds"), ({"folds": 1}, "at least 2"), ({"folds": 3, "fold": 3}, "0 … 2"),
    ({"folds": 3, "val_data": "x"}, "--val-data")])
def test_bad_fold_settings_are_usage_errors(settings, message):
    from seedlings.config import TrainConfig

    with pytest.raises(UsageError, match=message):
        TrainConfig(data="d", out="o", **settings).validate()


def test_training_all_folds_writes_out_of_fold_predictions_and_resumes(tmp_path, capsys):
    from seedlings.training.fit import train

    data = make_dataset(tmp_path / "d", per_class=6)
    common = {"data": str(data), "out": str(tmp_path / "cv"), "folds": 3, "epochs": 2, "image_size": 24,
              "batch_size": 8, "threads": 1, "cache_dir": str(tmp_path / "cache")}
    root = train(**common, progress=False)
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    with open(root / "oof.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == files  # every image once
    for fold in range(3):
        split = json.loads((root / f"fold-{fold}" / "split.json").read_text())
        assert split["fold"] == fold and not set(split["val"]) & set(split["train"])
        assert json.loads((root / f"fold-{fold}" / "model.json").read_text())["metrics"]["weights_epoch"] == 2
    probs = np.array([[float(r[c]) for c in list(rows[0])[3:]] for r in rows])
    assert np.allclose(probs.sum(1), 1, atol=1e-4)
    summary = json.loads((root / "oof.json").read_text())
    assert summary["n"] == len(files) and summary["folds"] == 3
    right = sum(r["true"] == r["predicted"] for r in rows)
    assert summary["f1_micro"] == pytest.approx(right / len(files))
    assert [e["epoch"] for e in summary["per_epoch"]] == [1, 2]

    # Resumable: a second call reads the finished folds; a deleted fold is trained again.
    before = {i: (root / f"fold-{i}" / "weights.safetensors").stat().st_mtime_ns for i in range(3)}
    for name in ("model.json", "val_predictions.csv", "checkpoint.safetensors"):
        (root / "fold-1" / name).unlink()
    capsys.readouterr()
    train(**common, progress=False)
    out = capsys.readouterr().out
    assert "fold 1/3: finished earlier" in out and "fold 2/3: training" in out
    assert (root / "fold-0" / "weights.safetensors").stat().st_mtime_ns == before[0]
    assert (root / "fold-1" / "weights.safetensors").stat().st_mtime_ns != before[1]
    with open(root / "oof.csv", newline="") as f:
        assert sorted(r["file"] for r in csv.DictReader(f)) == files


def test_the_python_api_resolves_the_recipe_as_the_command_line_does():
    from seedlings.cli import build_parser
    from seedlings.cli.train import NOT_SETTINGS
    from seedlings.config import TrainConfig, resolve
    from seedlings.training.fit import train

    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--pretrained", "--epochs", "3"])
    cli = resolve(None, {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS})
    api = resolve(None, {"data": "d", "out": "o", "pretrained": True, "epochs": 3})
    assert cli == api
    # A TrainConfig is taken as it is, overrides on top (they were dropped): epochs=0 reaches validation.
    with pytest.raises(UsageError, match="--epochs 0"):
        train(TrainConfig(data="d", out="o"), epochs=0)
    # An explicit value equal to the dataclass default is kept, not replaced by the recipe's.
    assert resolve(None, {"data": "d", "out": "o", "pretrained": True, "min_steps": 0}).min_steps == 0
    assert (cli.model, cli.image_size, cli.epochs, cli.augment.right_angles) == ("efficientnet_lite0", 160, 3, True)
    assert resolve(None, {"data": "d", "out": "o", "folds": 5}).keep == "last"
    assert resolve(None, {"data": "d", "out": "o", "folds": 5, "keep": "best"}).keep == "best"


def test_the_fold_benches_score_tta_and_compare_unfinished_recipes_on_common_images(tmp_path):
    """bench/oof_tta.py rescores each finished fold on its own held-out images (plain = the training's own
    out-of-fold predictions), and bench/oof_compare.py compares a recipe whose folds are not all finished."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from seedlings.training.fit import train
    from seedlings.training.folds import read_predictions

    bench = Path(__file__).resolve().parents[2] / "bench"
    data = make_dataset(tmp_path / "d", per_class=6)
    root = train(data=str(data), out=str(tmp_path / "cv"), folds=3, epochs=1, image_size=24, batch_size=8,
                 threads=1, cache_dir=str(tmp_path / "cache"), progress=False)
    (root / "fold-0" / "weights.safetensors").unlink()  # kept as predictions only: left out
    run = subprocess.run([sys.executable, str(bench / "oof_tta.py"), str(root), "--data", str(data),
                          "--threads", "1"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 fold(s) with weights: fold-1, fold-2" in run.stdout
    classes, files, _, plain = read_predictions(root / "tta-plain.csv")
    _, tta_files, _, tta = read_predictions(root / "tta.csv")
    held_out = sorted(f for i in (1, 2) for f in read_predictions(root / f"fold-{i}" / "val_predictions.csv")[1])
    assert files == tta_files == held_out
    oof_classes, oof_files, _, oof = read_predictions(root / "oof.csv")
    same = np.asarray([oof_files.index(f) for f in files])
    assert classes == oof_classes and np.allclose(plain, oof[same], atol=1e-4)
    assert not np.allclose(tta, plain, atol=1e-4)  # 8 views averaged, not the plain answer again

    nested = subprocess.run([sys.executable, str(bench / "nested_folds.py"), str(root), "--fold", "1", "--data",
                             str(data), "--out", str(tmp_path / "nested")], capture_output=True, text=True, timeout=120)
    assert nested.returncode == 0, nested.stderr[-3000:]
    linked = sorted(p.relative_to(tmp_path / "nested").as_posix() for p in (tmp_path / "nested").rglob("*.png"))
    fold1 = set(read_predictions(root / "fold-1" / "val_predictions.csv")[1])
    assert linked == sorted(set(oof_files) - fold1) and fold1 <= set(oof_files)  # the outer fold's training images
    assert all((tmp_path / "nested" / f).is_symlink() for f in linked)  # linked, never copied

    partial = tmp_path / "partial"
    for i in (0, 1):
        (partial / f"fold-{i}").mkdir(parents=True)
        shutil.copy(root / f"fold-{i}" / "val_predictions.csv", partial / f"fold-{i}")
    compare = [sys.executable, str(bench / "oof_compare.py"), f"all={root}", f"partial={partial}"]
    refused = subprocess.run(compare, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "--common" in refused.stderr
    common = subprocess.run(compare + ["--common", "--png", str(tmp_path / "cm.png")], capture_output=True,
                            text=True, timeout=120)
    assert common.returncode == 0, common.stderr[-3000:]
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the first recipe's confusion matrix
    n = sum(len(read_predictions(partial / f"fold-{i}" / "val_predictions.csv")[1]) for i in (0, 1))
    line = next(line for line in common.stdout.splitlines() if line.startswith("partial"))
    assert line.split()[1:4] == ["2", "(0+1)", str(n)]
    assert line.endswith("0 / 0, p = 1.000")  # the same predictions as `all` on those images



def test_oof_compare_scores_an_ensemble_on_averaged_probabilities(tmp_path):
    """LABEL=A+B averages each image's probabilities over the members (on the images all of them scored), so
    the ensemble can be right where each member alone is wrong, and is compared with the first recipe."""
    import subprocess
    import sys
    from pathlib import Path

    from seedlings.training.folds import write_predictions

    classes = ["a", "b"]
    files = [f"{c}/{i}.png" for i, c in enumerate("aabb")]
    true = [f.split("/")[0] for f in files]
    # a: right on 0 and 2 only; b: right on 1 and 3 only; their mean: right on all four.
    a = np.asarray([[0.9, 0.1], [0.45, 0.55], [0.1, 0.9], [0.55, 0.45]])
    b = np.asarray([[0.45, 0.55], [0.9, 0.1], [0.55, 0.45], [0.1, 0.9]])
    write_predictions(tmp_path / "a.csv", classes, files, true, a)
    write_predictions(tmp_path / "b.csv", classes, files, true, b)
    write_predictions(tmp_path / "b3.csv", classes, files[:3], true[:3], b[:3])
    bench = Path(__file__).resolve().parents[2] / "bench" / "oof_compare.py"

    def compare(*specs):
        run = subprocess.run([sys.executable, str(bench), *specs], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        return {line.split()[0]: line for line in run.stdout.splitlines() if line.split()}

    rows = compare(f"a={tmp_path / 'a.csv'}", f"ens={tmp_path / 'a.csv'}+{tmp_path / 'b.csv'}")
    assert re.search(r"\s4\s+0\.5000\s+2\s", rows["a"]), rows["a"]
    assert re.search(r"\s4\s+1\.0000\s+0\s", rows["ens"]), rows["ens"]
    assert rows["ens"].endswith("2 / 0, p = 0.500")
    rows = compare(f"a={tmp_path / 'a.csv'}", f"ens={tmp_path / 'a.csv'}+{tmp_path / 'b3.csv'}", "--common")
    assert re.search(r"\s3\s+1\.0000\s+0\s", rows["ens"]), rows["ens"]  # the images both members scored


def test_oof_prior_shift_fits_on_the_other_folds_and_fixes_a_systematic_grass_bias(tmp_path):
    """bench/oof_prior_shift.py: every fold under-predicts Black-grass the same way (0.45 where the truth is
    Black-grass), so a shift fitted on the other folds moves all of them right; the uncorrected row keeps the
    errors, and the McNemar column counts the images only the correction gets right."""
    import subprocess
    import sys
    from pathlib import Path

    from seedlings.training.folds import write_predictions

    classes = ["Black-grass", "Loose Silky-bent"]
    for i in range(3):
        files = [f"{c}/{i}-{j}.png" for j, c in enumerate(classes * 4)]
        true = [f.split("/")[0] for f in files]
        probs = np.asarray([[0.45, 0.55] if t == classes[0] else [0.2, 0.8] for t in true])
        (tmp_path / "cv" / f"fold-{i}").mkdir(parents=True)
        write_predictions(tmp_path / "cv" / f"fold-{i}" / "val_predictions.csv", classes, files, true, probs)
    bench = Path(__file__).resolve().parents[2] / "bench" / "oof_prior_shift.py"
    run = subprocess.run([sys.executable, str(bench), str(tmp_path / "cv")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {re.search(r"\d\s+(none|bias|grass shift)\s", line).group(1): line
            for line in run.stdout.splitlines() if line.startswith("cv ")}
    assert re.search(r"\s24\s+none\s+0\.5000\s+12\s", rows["none"]), rows["none"]
    assert re.search(r"grass shift\s+1\.0000\s+0\s+12 / 0, p = 0\.000", rows["grass shift"]), rows["grass shift"]
    assert rows["grass shift"].split()[-3:] == ["+0.3", "+0.3", "+0.3"]  # log(0.55/0.45) = 0.201 < 0.3
