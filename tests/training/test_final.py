"""A model trained on every image (--val-fraction 0): the last epoch ships, and --calibrate-from takes its
temperature, "not a seedling" thresholds and reported accuracy from the recipe's out-of-fold predictions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load_file
from tests.helpers import make_dataset

from seedlings.errors import SeedlingsError, UsageError
from seedlings.evaluation.metrics import fit_temperature, softmax
from seedlings.training.final import read_evidence
from seedlings.training.folds import write_predictions

TINY = {"epochs": 2, "image_size": 24, "batch_size": 8, "threads": 1}


def bench_module(name: str):
    """A script of bench/ imported as a module (bench/ is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[2] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def weights_epoch(run) -> int:
    with safe_open(str(run / "weights.safetensors"), "pt") as f:
        return int(f.metadata()["epoch"])


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """A synthetic data set and its 3-fold run of a tiny recipe (shared: each fold trains for seconds)."""
    from seedlings.training.fit import train

    tmp = tmp_path_factory.mktemp("final")
    data = make_dataset(tmp / "d", per_class=8)
    cv = train(data=str(data), out=str(tmp / "cv"), folds=3, cache_dir=str(tmp / "cache"), progress=False, **TINY)
    return tmp, data, cv


def test_a_run_on_every_image_ships_its_last_epoch_and_says_it_is_uncalibrated(folds, capsys):
    from seedlings.training.fit import train

    tmp, data, _ = folds
    run = train(data=str(data), out=str(tmp / "all-plain"), val_fraction=0.0, cache_dir=str(tmp / "cache"),
                progress=False, **{**TINY, "epochs": 3})
    out = capsys.readouterr().err
    assert "the last epoch's weights ship" in out and "no --calibrate-from" in out
    assert weights_epoch(run) == 3  # it shipped epoch 1 before: an empty validation "improved" only once
    meta = json.loads((run / "model.json").read_text())
    assert meta["calibration"]["temperature"] == 1.0 and meta["calibration"]["fitted_on"] == "none"
    assert meta["unknown"]["threshold"] == 0.0 and "distance_threshold" not in meta["unknown"]
    assert meta["metrics"]["n"] == 0 and meta["metrics"]["best_epoch"] is None
    assert not (run / "val_predictions.csv").exists()


def test_calibrate_from_takes_the_folds_temperature_thresholds_and_score(folds):
    from seedlings.training.fit import train

    tmp, data, cv = folds
    run = train(data=str(data), out=str(tmp / "all"), val_fraction=0.0, calibrate_from=str(cv),
                cache_dir=str(tmp / "cache"), progress=False, **TINY)
    meta = json.loads((run / "model.json").read_text())
    n = sum(1 for _ in data.rglob("*.png"))
    oof = json.loads((cv / "oof.json").read_text())
    assert meta["metrics"]["split"] == "out-of-fold" and meta["metrics"]["n"] == n
    assert meta["metrics"]["f1_micro"] == pytest.approx(oof["f1_micro"])
    assert meta["calibration"]["fitted_on"] == "out-of-fold" and meta["calibration"]["n"] == n

    # The temperature: refitted on the folds' logits (T_i · log p), not any one fold's.
    records = [json.loads((cv / f"fold-{i}" / "model.json").read_text()) for i in range(3)]
    evidence = read_evidence(cv, sorted(p.name for p in data.iterdir()),
                             sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png")),
                             records[0]["backbone"], TINY["image_size"])
    assert meta["calibration"]["temperature"] == pytest.approx(evidence.calibration.temperature)
    assert meta["unknown"]["threshold"] == pytest.approx(evidence.rule.threshold)

    # The distance: the folds' median threshold; scales = own training quantiles × the folds' median ratio.
    unknown = meta["unknown"]
    assert unknown["distance_threshold"] == pytest.approx(np.median([r["unknown"]["distance_threshold"]
                                                                      for r in records]))
    for k, name in enumerate(("mahalanobis", "cosine")):
        ratio = np.median([r["unknown"]["distance_scales"][name] / r["unknown"]["distance_train_quantiles"][name]
                           for r in records])
        assert unknown["distance_scales"]["ratio"][name] == pytest.approx(ratio)
        want = unknown["distance_train_quantiles"][name] * ratio
        assert unknown["distance_scales"][name] == pytest.approx(want, rel=1e-6)
        assert load_file(str(run / "novelty.safetensors"))["scales"][k].item() == pytest.approx(want, rel=1e-5)
    assert weights_epoch(run) == TINY["epochs"]
    assert "novelty.safetensors" in meta["files"]


def test_the_temperature_is_recovered_from_folds_calibrated_differently(tmp_path):
    """Each fold's probabilities carry its own temperature; T_i · log p undoes it, so one temperature fitted
    on the folds equals the one fitted on their logits."""
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    labels = rng.integers(0, 3, 300)
    logits = rng.normal(0, 1, (300, 3)) + 2.5 * np.eye(3)[labels] * rng.uniform(0.3, 2, (300, 1))
    want = fit_temperature(logits, labels)
    files = [f"{classes[y]}/{i}.png" for i, y in enumerate(labels)]
    for fold, (rows, t) in enumerate([(slice(0, 150), 0.6), (slice(150, 300), 1.7)]):
        run = tmp_path / f"fold-{fold}"
        run.mkdir()
        write_predictions(run / "val_predictions.csv", classes, files[rows], [classes[y] for y in labels[rows]],
                          softmax(logits[rows], t))
        (run / "model.json").write_text(json.dumps(fold_record(t)))
    evidence = read_evidence(tmp_path, classes, files, "resnet10t", 24)
    assert evidence.calibration.temperature == pytest.approx(want, rel=0.01)
    assert evidence.report["n"] == 300 and evidence.folds == 2
    assert list(evidence.labels) == list(labels) and [f["n"] for f in evidence.per_fold] == [150, 150]
    assert np.allclose(softmax(evidence.logits, 1.0), softmax(logits, 1.0), atol=1e-6)  # logits up to a shift
    assert list(evidence.distance_ratio) == pytest.approx([2.0, 1.5])
    probs = softmax(logits, evidence.calibration.temperature)
    assert (probs.max(1) < evidence.rule.threshold).mean() == pytest.approx(0.01, abs=0.005)


def fold_record(t: float, train_quantiles: bool = True) -> dict:
    unknown = {"distance_threshold": 0.9, "distance_scales": {"mahalanobis": 20.0, "cosine": 0.3}}
    if train_quantiles:
        unknown["distance_train_quantiles"] = {"mahalanobis": 10.0, "cosine": 0.2}
    return {"backbone": "resnet10t", "image_size": 24, "calibration": {"temperature": t}, "unknown": unknown}


def test_wrong_folds_are_refused_before_training_with_what_to_do(folds, tmp_path):
    from seedlings.training.fit import train

    tmp, data, cv = folds
    common = {"data": str(data), "val_fraction": 0.0, "cache_dir": str(tmp / "cache"), "progress": False, **TINY}
    with pytest.raises(UsageError, match="--val-fraction 0"):
        train(out=str(tmp_path / "x"), calibrate_from=str(cv), **{**common, "val_fraction": 0.15})
    with pytest.raises(UsageError, match="no finished fold runs"):
        train(out=str(tmp_path / "x"), calibrate_from=str(tmp_path / "nowhere"), **common)
    assert not (tmp_path / "x" / "checkpoint.safetensors").exists()

    def copy(name):
        shutil.copytree(cv, tmp_path / name)
        return tmp_path / name

    part = copy("part")
    (part / "fold-2" / "model.json").unlink()
    with pytest.raises(SeedlingsError, match="unfinished folds \\(fold-2\\)"):
        train(out=str(tmp_path / "y"), calibrate_from=str(part), **common)
    with pytest.raises(SeedlingsError, match="resnet10t at 24 px, this run resnet10t at 32 px"):
        train(out=str(tmp_path / "y"), calibrate_from=str(cv), **{**common, "image_size": 32})
    other = make_dataset(tmp_path / "other", per_class=9)
    with pytest.raises(SeedlingsError, match="not scored by them"):
        train(out=str(tmp_path / "y"), data=str(other), calibrate_from=str(cv),
              **{k: v for k, v in common.items() if k != "data"})
    old = copy("old")
    for i in (0, 2):
        meta = json.loads((old / f"fold-{i}" / "model.json").read_text())
        del meta["unknown"]["distance_train_quantiles"]
        (old / f"fold-{i}" / "model.json").write_text(json.dumps(meta))
    # Folds trained before the training quantile was recorded: the ratio comes from those that have it ...
    names = sorted(p.name for p in data.iterdir())
    files = sorted(p.relative_to(data).as_posix() for p in data.rglob("*.png"))
    evidence = read_evidence(old, names, files, "resnet10t", TINY["image_size"])
    fold1 = json.loads((old / "fold-1" / "model.json").read_text())["unknown"]
    assert evidence.ratio_folds == ["fold-1"] and evidence.record()["ratio_from"] == ["fold-1"]
    assert evidence.distance_ratio[1] == pytest.approx(fold1["distance_scales"]["cosine"]
                                                       / fold1["distance_train_quantiles"]["cosine"])
    # ... and none having it is an error that says what to do.
    meta = json.loads((old / "fold-1" / "model.json").read_text())
    del meta["unknown"]["distance_train_quantiles"]
    (old / "fold-1" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(SeedlingsError, match="none of its folds records .* retrain at least one fold"):
        train(out=str(tmp_path / "y"), calibrate_from=str(old), **common)
    assert not (tmp_path / "y" / "checkpoint.safetensors").exists()  # each stopped before its first epoch


def test_the_distance_ratio_bench_recomputes_what_the_folds_recorded(folds):
    """bench/distance_ratio.py refits each fold's detector from its weights: its percentiles are the ones the
    fold's model.json recorded when it trained (what --calibrate-from reads for folds trained since)."""
    import subprocess
    import sys

    tmp, data, cv = folds
    bench = Path(__file__).resolve().parents[2] / "bench" / "distance_ratio.py"
    run = subprocess.run([sys.executable, str(bench), str(cv), "--data", str(data), "--threads", "1"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in run.stdout.splitlines()
            if line.startswith("fold-")}
    assert sorted(rows) == ["fold-0", "fold-1", "fold-2"]
    for name, (maha_train, maha_held, _, cos_train, cos_held, _) in rows.items():
        unknown = json.loads((cv / name / "model.json").read_text())["unknown"]
        assert maha_train == pytest.approx(unknown["distance_train_quantiles"]["mahalanobis"], abs=0.06)
        assert maha_held == pytest.approx(unknown["distance_scales"]["mahalanobis"], abs=0.06)
        assert cos_train == pytest.approx(unknown["distance_train_quantiles"]["cosine"], abs=6e-5)
        assert cos_held == pytest.approx(unknown["distance_scales"]["cosine"], abs=6e-5)
    assert "Mahalanobis ratio: median" in run.stdout


def test_a_final_model_is_exported_on_its_own_photos_and_not_scored_on_them(folds, tmp_path):
    """Exported, its parity and int8 images are its training photos (it holds none out), not noise; evaluated on
    its own folder it says that nothing there is held out and which figure is its accuracy, instead of a table
    of zeros; ``--all`` still scores the folder, as training images."""
    import subprocess
    import sys

    from seedlings.export.onnx import export_run
    from seedlings.training.fit import train

    tmp, data, cv = folds
    run = tmp_path / "final"
    train(data=str(data), out=str(run), val_fraction=0.0, calibrate_from=str(cv), cache_dir=str(tmp / "cache"),
          progress=False, **TINY)
    said: list[str] = []
    model_dir = export_run(run, tmp_path / "model", precision="int8", log=said.append)
    meta = json.loads((model_dir / "model.json").read_text())
    assert meta["export"]["parity_images"] == "24 training images of the run (it holds none out)"
    assert any(line.startswith("parity on 24 training images") for line in said), said

    def evaluate(*extra):
        return subprocess.run([sys.executable, "-m", "seedlings", "evaluate", "--model", str(model_dir), "--data",
                               str(data), "--json", *extra], capture_output=True, text=True, timeout=300)

    refused = evaluate()
    assert refused.returncode != 0 and refused.stdout == ""
    oof = json.loads((cv / "oof.json").read_text())
    assert "was trained on every image of this folder, so none is held out to score it" in refused.stderr
    assert f"out-of-fold micro-F1, {oof['f1_micro']:.4f} on 24 images" in refused.stderr
    assert "add --all" in refused.stderr
    scored = evaluate("--all")
    assert scored.returncode == 0, scored.stderr[-2000:]
    report = json.loads(scored.stdout)
    assert report["n"] == 24 and report["scope"] == "all images (including the run's training images)"

    # The model card's figures for it: accuracy and confusion from the folds, the probes on the model itself.
    bench = Path(__file__).resolve().parents[2] / "bench" / "model_card_figures.py"
    figures = subprocess.run([sys.executable, str(bench), "--model", str(model_dir), "--data", str(data), "--out",
                              str(tmp_path / "card")], capture_output=True, text=True, timeout=300)
    assert figures.returncode == 2 and "add --folds CV" in figures.stderr
    figures = subprocess.run([sys.executable, str(bench), "--model", str(model_dir), "--data", str(data), "--out",
                              str(tmp_path / "card"), "--folds", str(cv)], capture_output=True, text=True, timeout=300)
    assert figures.returncode == 0, figures.stderr[-3000:]
    card = json.loads((tmp_path / "card" / "figures.json").read_text())
    assert card["out_of_fold"]["f1_micro"] == pytest.approx(oof["f1_micro"]) and card["out_of_fold"]["n"] == 24
    assert sorted(card["unknown"]) == ["probes_seed0", "probes_seed1"]
    assert sorted(card["unknown_folds"]) == ["fold-0", "fold-1", "fold-2"]  # each fold's own rule, same probes
    assert all(sorted(rates) == ["probes_seed0", "probes_seed1"] for rates in card["unknown_folds"].values())
    # retrain_default.py's last stage says whether a model meets the probe target, from the same probe sets.
    retrain = bench_module("retrain_default")
    recipe = retrain.recipe_args(data, image_size=192)
    assert recipe[recipe.index("--image-size") + 1] == "192" and "--pretrained" in recipe
    assert "--image-size" not in retrain.recipe_args(data) and "--pretrained" not in retrain.recipe_args(data, True)
    assert retrain.keep_args() == ["--keep", "last"]  # the shipped fine-tune: the last epoch, as its folds
    assert retrain.keep_args(scratch=True) == [] and retrain.keep_args(final=True) == []
    worst = max(card["unknown"][k]["false_accept_all"] for k in ("probes_seed0", "probes_seed1"))
    assert retrain.probe_check(model_dir, target=worst) is True
    assert retrain.probe_check(model_dir, target=worst - 0.001) is False
    assert card["int8_top1_agreement"]["n"] == 24
    folds_said = [json.loads((cv / f"fold-{i}" / "model.json").read_text())["unknown"] for i in range(3)]
    assert card["false_reject_folds"]["both"] == pytest.approx(
        np.mean([u["false_reject_validation_total"] for u in folds_said]))  # 8 held-out images each
    assert (tmp_path / "card" / "confusion_matrix.png").stat().st_size > 1000
    other = tmp_path / "other-cv"
    shutil.copytree(cv, other)
    record = json.loads((other / "fold-0" / "model.json").read_text())
    record["calibration"]["temperature"] *= 2
    (other / "fold-0" / "model.json").write_text(json.dumps(record))
    wrong = subprocess.run([sys.executable, str(bench), "--model", str(model_dir), "--data", str(data), "--out",
                            str(tmp_path / "card2"), "--folds", str(other)], capture_output=True, text=True,
                           timeout=300)
    assert wrong.returncode != 0 and "not the folds" in wrong.stderr
    curves = subprocess.run([sys.executable, str(bench.with_name("recipe_curves.py")), f"a={cv / 'fold-0'}",
                             "--reference", str(model_dir), "--out", str(tmp_path / "c.png")],
                            capture_output=True, text=True, timeout=300)
    assert curves.returncode != 0 and "not a validation-split score" in curves.stderr  # not drawn as if it were


def test_the_probe_distances_bench_splits_the_rule_the_model_applies(folds):
    """bench/probe_distances.py recomputes each part of a run's "not a seedling" rule on the generated probes: its
    parts give the distance the model's own graph outputs and the same images let through."""
    from seedlings import load_model
    from seedlings.evaluation import ood

    _, _, cv = folds
    bench = bench_module("probe_distances")
    run = cv / "fold-0"
    probes = ood.generate(8, size=24, seed=0)
    parts = bench.components(run, probes)
    model = load_model(run)
    probs, distance = model.assess(np.concatenate(list(probes.values())))
    threshold = model.file.unknown.distance_threshold
    np.testing.assert_allclose(np.maximum(parts["maha"], parts["cos"]) * threshold, distance, rtol=1e-3, atol=1e-5)
    assert (parts["unsure"] == model.file.unknown.signals(probs, distance)[0]).all()
    assert (parts["accepted"] == ~model.unknown(probs, distance)).all()
    assert list(parts["kinds"][::8]) == list(ood.KINDS)


def test_the_knn_candidate_measures_the_distance_to_the_training_photos(folds, tmp_path):
    """probe_distances --knn: a training photo sent as a probe lies at distance 0 from the bank of training photos,
    the threshold comes from the held-out ones (the 3 % budget), and a folder without the run's photos is refused."""
    from seedlings.artifact import ModelFile
    from seedlings.data.cache import prepare
    from seedlings.evaluation import ood

    _, data, cv = folds
    bench = bench_module("probe_distances")
    run = cv / "fold-0"
    split = json.loads((run / "split.json").read_text())
    prepared = prepare(data, ModelFile.load(run).preprocess, progress=False)
    rows = [prepared.files.index(name) for name in split["train"][:4]]
    photos = np.asarray(prepared.images[np.asarray(rows)])
    probes = {"photos": photos, "text": ood.generate(4, size=24, seed=0)["text"]}
    knn = bench.knn_rule(run, data, probes, k=1)
    assert list(knn["kinds"]) == ["photos"] * 4 + ["text"] * 4
    assert np.all(knn["distance"][:4] < 1e-3 / knn["threshold"])  # each is its own nearest training photo
    assert 0 < knn["threshold"] < 2 and (knn["distance"][4:] > knn["distance"][:4].max()).all()
    assert knn["accepted"].dtype == bool and list(knn["nearest"][:4]) == split["train"][:4]
    other = make_dataset(tmp_path / "other", per_class=3)
    with pytest.raises(SystemExit, match="not the photos"):
        bench.knn_rule(run, other, probes, k=1)
