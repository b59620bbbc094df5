"""Ensembles: members on one split, exported as one ONNX graph that averages their probabilities."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from seedlings.errors import SeedlingsError


@pytest.fixture(scope="module")
def ensemble_dir(trained_run, second_run, tmp_path_factory):
    from seedlings.export.ensemble import export_ensemble

    return export_ensemble([trained_run, second_run], tmp_path_factory.mktemp("ens") / "model", log=lambda m: None)


def test_ensemble_predicts_the_mean_of_its_members(trained_run, second_run, ensemble_dir):
    from seedlings import load_model

    images = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    members = [load_model(r) for r in (trained_run, second_run)]
    ens = load_model(ensemble_dir)
    assert ens.backend_name == "onnx"
    from seedlings.evaluation.metrics import softmax
    from seedlings.preprocess import PreprocessSpec, normalize

    meta = json.loads((ensemble_dir / "model.json").read_text())
    x = normalize(images, PreprocessSpec.from_dict(meta["preprocess"]))
    member_probs = np.mean([softmax(m.backend.scores(x)[0].astype(np.float64)) for m in members], axis=0)
    ens_probs = softmax(ens.backend.scores(x)[0].astype(np.float64))
    assert np.abs(member_probs - ens_probs).max() < 1e-5
    assert not np.allclose(member_probs, softmax(members[0].backend.scores(x)[0].astype(np.float64)), atol=1e-3)


def test_ensemble_model_json_describes_members_scores_and_unknown(ensemble_dir, trained_run, second_run):
    meta = json.loads((ensemble_dir / "model.json").read_text())
    assert meta["name"] == "seedlings-resnet10t-ensemble2"
    assert [m["seed"] for m in meta["ensemble"]["members"]] == [0, 7]
    assert meta["metrics"]["n"] == len(json.loads((trained_run / "split.json").read_text())["val"])
    assert meta["unknown"]["method"] == "max_probability+mahalanobis+cosine"
    assert meta["unknown"]["distance_threshold"] > 0 and 0 < meta["calibration"]["temperature"]
    assert meta["export"]["outputs"] == ["logits", "distance"]
    assert meta["export"]["fp32_parity_max_abs_dprob"] < 1e-4
    assert (ensemble_dir / "split.json").is_file()


def test_an_ensemble_folder_evaluates_on_its_validation_split(ensemble_dir, trained_run):
    from seedlings import load_model
    from seedlings.evaluation.report import evaluate

    folder = ensemble_dir.parent / "copy"  # beside the original: source_run is relative to the folder
    shutil.copytree(ensemble_dir, folder)
    (folder / "split.json").unlink()  # found again through source_run
    meta = json.loads((folder / "model.json").read_text())
    data = json.loads((trained_run / "model.json").read_text())["training"]["data"]
    assert meta["training"]["data"] == Path(data).name  # no absolute path of this machine
    report = evaluate(load_model(folder), data, progress=False)
    assert report["n"] == meta["metrics"]["n"]
    assert report["f1_micro"] == pytest.approx(meta["metrics"]["f1_micro"], abs=1e-9)


def test_ensemble_members_must_share_split_and_classes(trained_run, second_run, tmp_path):
    from seedlings.export.ensemble import export_ensemble

    other = tmp_path / "other-split"
    shutil.copytree(second_run, other)
    split = json.loads((other / "split.json").read_text())
    split["train"], split["val"] = split["train"][1:], split["val"] + split["train"][:1]
    (other / "split.json").write_text(json.dumps(split))
    with pytest.raises(SeedlingsError, match="validated on other images.*--split-seed"):
        export_ensemble([trained_run, other], tmp_path / "m1", log=lambda m: None)
    meta = json.loads((other / "model.json").read_text())
    meta["image_size"] = meta["preprocess"]["image_size"] = 48  # one size: model.json refuses two
    (other / "model.json").write_text(json.dumps(meta))
    with pytest.raises(SeedlingsError, match="image_size differ"):
        export_ensemble([trained_run, other], tmp_path / "m2", log=lambda m: None)
    with pytest.raises(SeedlingsError, match="same run is given twice"):
        export_ensemble([trained_run, trained_run], tmp_path / "m3", log=lambda m: None)
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()


def test_cli_export_of_several_runs_needs_out(trained_run, second_run, tmp_path):
    cmd = [sys.executable, "-m", "seedlings", "export", str(trained_run), str(second_run)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "needs --out" in r.stderr
    r = subprocess.run(cmd + ["--out", str(tmp_path / "ens"), "--half-weights"], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert "ensemble of 2: validation micro-F1" in r.stderr and (tmp_path / "ens" / "model.onnx").is_file()


def test_runs_validated_on_a_val_data_folder_make_an_ensemble(tmp_path):
    """Members trained with --val-data are scored on that folder; another folder is refused."""
    from tests.helpers import SYNTH_CLASSES, make_dataset

    from seedlings.export.ensemble import export_ensemble
    from seedlings.training.fit import train

    data = make_dataset(tmp_path / "train", per_class=10)
    val = make_dataset(tmp_path / "val", per_class=3, seed=5, classes=SYNTH_CLASSES[1:])  # labels shift by one
    other_val = make_dataset(tmp_path / "val2", per_class=2, seed=6)
    runs = [train(data=str(data), val_data=str(v), out=str(tmp_path / f"m{i}"), epochs=1, image_size=24,
                  batch_size=16, threads=1, seed=i, progress=False)
            for i, v in enumerate((val, val, other_val))]
    meta0 = json.loads((runs[0] / "model.json").read_text())
    assert meta0["training"]["val_data"] == str(val)
    from seedlings.artifact import ModelFile
    from seedlings.export.onnx import run_data

    train_set, val_set = run_data(runs[0], ModelFile.load(runs[0]))
    assert len(train_set.rows) == 30 and sorted(val_set.labels[val_set.rows].tolist()) == [1, 1, 1, 2, 2, 2]
    out = export_ensemble(runs[:2], tmp_path / "ens", log=lambda m: None)
    meta = json.loads((out / "model.json").read_text())
    assert meta["metrics"]["n"] == 6 and meta["export"]["parity_images"] == "6 validation images of the run"
    members = [json.loads((r / "model.json").read_text())["metrics"]["f1_micro"] for r in runs[:2]]
    assert [m["f1_micro"] for m in meta["ensemble"]["members"]] == members
    with pytest.raises(SeedlingsError, match="validated on other images"):
        export_ensemble([runs[0], runs[2]], tmp_path / "bad", log=lambda m: None)
