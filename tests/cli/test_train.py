"""`seedlings train`: flags reach the resolved settings (tests/cli/test_flags.py checks flags against fields)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from tests.helpers import make_dataset

from seedlings.config import resolve


def test_every_train_flag_reaches_the_config(monkeypatch):
    """Each `seedlings train` flag ends up in the resolved settings (a flag the CLI forgot would be ignored)."""
    import seedlings.training.fit as fit
    from seedlings.cli import main
    from seedlings.config import resolve

    seen = {}
    monkeypatch.setattr(fit, "train_from_cli", lambda config, overrides, resume: seen.update(
        cfg=resolve(config, overrides)))
    main(["train", "--data", "d", "--out", "o", "--mixup", "0.2", "--cutmix", "1.0", "--drop-path", "0.1",
          "--seed", "3", "--split-seed", "0", "--epochs", "5", "--threads", "1", "--no-ema", "--balance", "sampler"])
    cfg = seen["cfg"]
    assert (cfg.mixup, cfg.cutmix, cfg.drop_path, cfg.seed, cfg.split_seed, cfg.epochs, cfg.threads, cfg.ema,
            cfg.balance) == (0.2, 1.0, 0.1, 3, 0, 5, 1, False, "sampler")


def test_data_is_one_folder_or_several(tmp_path):
    """--data repeats (a list in the settings, config.yaml and YAML); one folder stays a string, as before."""
    from seedlings.cli import build_parser
    from seedlings.cli.train import settings_of
    from seedlings.config import resolve
    from seedlings.errors import UsageError

    parse = lambda *argv: resolve(None, settings_of(build_parser().parse_args(["train", "--out", "o", *argv])))  # noqa: E731
    assert parse("--data", "base").data == "base" and parse("--data", "base").data_folders() == ["base"]
    assert parse("--data", "base", "--data", "feedback").data == ["base", "feedback"]
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("data: [base, feedback]\n")
    assert resolve(str(yaml_file), {"out": "o"}).data == ["base", "feedback"]
    assert resolve(str(yaml_file), {"out": "o", "data": ["other"]}).data == "other"  # the flag replaces the list
    yaml_file.write_text("data: base\n")
    assert resolve(str(yaml_file), {"out": "o"}).data == "base"
    with pytest.raises(UsageError, match="--data 'base': given twice"):
        parse("--data", "base", "--data", "feedback", "--data", "base")
    with pytest.raises(UsageError, match="--data is required"):
        resolve(None, {"out": "o", "data": []})


def _two_folders(root: Path, names: tuple[str, str] = ("base", "feedback")) -> tuple[Path, Path]:
    """base: Charlock, Maize; feedback: Maize and a new species, and a base photo relabelled."""
    base = make_dataset(root / names[0], per_class=6, classes=["Charlock", "Maize"], seed=0, size=24)
    feedback = make_dataset(root / names[1], per_class=4, classes=["Maize", "Sugar beet"], seed=1, size=24)
    shutil.copy(base / "Charlock" / "img_001.png", feedback / "Maize" / "relabelled.png")
    return base, feedback


def test_training_on_several_folders_grows_an_init_model_to_the_union_of_their_classes(tmp_path, capsys):
    from seedlings.cli import main
    from seedlings.data import prepare_folders
    from seedlings.training.fit import read_or_make_split
    from seedlings.training.run_folder import CHECKPOINT

    base, feedback = _two_folders(tmp_path)
    common = ["--epochs", "1", "--image-size", "24", "--batch-size", "8", "--threads", "1",
              "--cache-dir", str(tmp_path / "cache")]
    first, run = tmp_path / "first", tmp_path / "run"
    assert main(["train", "--data", str(base), "--out", str(first), *common]) == 0
    assert json.loads((first / "model.json").read_text())["classes"] == ["Charlock", "Maize"]
    assert "sources" not in json.loads((first / "split.json").read_text())  # one folder: split.json as before

    capsys.readouterr()
    assert main(["train", "--init", str(first), "--data", str(base), "--data", str(feedback), "--out", str(run),
                 "--min-steps", "0", *common]) == 0
    assert "1 of them change their label" in capsys.readouterr().err  # D.log writes to stderr
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == ["Charlock", "Maize", "Sugar beet"]
    assert meta["init"]["classifier"] == "kept 2 of 3 classes; new: Sugar beet"  # Charlock's, Maize's rows kept
    assert meta["init"]["classes_new"] == ["Sugar beet"] and meta["init"]["classes_kept"] == ["Charlock", "Maize"]
    assert meta["training"]["data"] == [str(base), str(feedback)]
    assert yaml.safe_load((run / "config.yaml").read_text())["data"] == [str(base), str(feedback)]

    split = json.loads((run / "split.json").read_text())
    ids = split["train"] + split["val"]
    data = prepare_folders([base, feedback], 24, cache_root=tmp_path / "cache", progress=False)
    assert sorted(ids) == sorted(data.files) and len(set(ids)) == len(ids) == 12 - 1 + 9
    assert "Charlock/img_001.png" not in ids and "@1-feedback/Maize/relabelled.png" in ids
    assert {"Maize/img_000.png", "@1-feedback/Maize/img_000.png"} <= set(ids)
    assert [s["folder"] for s in split["sources"]] == ["base", "feedback"]
    with open(run / "val_predictions.csv", newline="") as f:
        assert sorted(r["file"] for r in csv.DictReader(f)) == sorted(split["val"])

    # Resuming finds the same split; another --data list (here: the other order) is refused, naming both.
    cfg = resolve(str(run / "config.yaml"), {})
    assert read_or_make_split(cfg, data, resuming=True).val == split["val"]
    mtime = (run / CHECKPOINT).stat().st_mtime_ns
    assert main(["train", "--data", str(feedback), "--data", str(base), "--out", str(run), "--resume", *common]) == 1
    assert ("was trained on --data base, feedback, not on --data " f"{feedback}, {base}; resume with the same"
            in capsys.readouterr().err)
    assert (run / CHECKPOINT).stat().st_mtime_ns == mtime


def test_a_run_on_several_folders_is_evaluated_and_exported_on_its_own_split(tmp_path):
    """Two folders of one name (the Kaggle set and a feedback export are both `train`): identities by position,
    evaluate scores each folder's share of the validation split, export joins the folders as training did."""
    from seedlings.api import load_model
    from seedlings.evaluation.report import evaluate
    from seedlings.export.onnx import export_run
    from seedlings.training.fit import train

    base, feedback = _two_folders(tmp_path, ("kaggle/train", "feedback/train"))
    run = train(data=[str(base), str(feedback)], out=str(tmp_path / "run"), epochs=1, image_size=24, batch_size=8,
                threads=1, cache_dir=str(tmp_path / "cache"), progress=False)
    split = json.loads((run / "split.json").read_text())
    assert [s["prefix"] for s in split["sources"]] == ["", "@1-train/"]
    model = load_model(run)
    for folder, mine in ((base, lambda f: not f.startswith("@1-train/")), (feedback, lambda f: f.startswith("@1-"))):
        report = evaluate(model, folder, progress=False)
        assert report["scope"] == "validation split of the run"
        assert sorted(report["_files"]) == sorted(f.removeprefix("@1-train/") for f in split["val"] if mine(f))
    out = export_run(run, tmp_path / "model", log=lambda m: None)
    exported = json.loads((out / "model.json").read_text())
    assert exported["training"]["data"] == ["train", "train"]  # names only, as for one folder
    assert exported["export"]["parity_images"] == f"{split['n_val']} validation images of the run"
