"""A model trained on every labelled image: calibrated from its recipe's out-of-fold predictions.

    seedlings train --data DIR --out CV --folds 5 [recipe flags]                         the recipe's folds
    seedlings train --data DIR --out FINAL --val-fraction 0 --calibrate-from CV [recipe flags]

With ``--val-fraction 0`` no image is held out, so nothing in the run can set its temperature, its "not a
seedling" thresholds or the accuracy it reports. The K fold models of the same recipe on the same images can:
each scored the images it did not train on. From their folders (``val_predictions.csv`` and ``model.json``):

- **Temperature.** A fold's probabilities are ``softmax(logits / T_i)``, so ``T_i · log p`` is that fold model's
  logits up to a constant per image, which softmax ignores. One temperature is fitted (NLL) on all of them,
  as a run fits it on its validation logits. It assumes the final model's logits are scaled like its folds'
  (the same recipe on a quarter more images).
- **Max-probability threshold.** The quantile of the out-of-fold maximum probabilities (under that
  temperature) that flags the same 1 % of real photos a run's validation split would.
- **Feature distance.** The final model's class statistics come from all its images, as a run's come from its
  training images; but images a model trained on sit nearer to them than new photos do. Every run records the
  distances' quantile on its training images beside the one on its held-out images (``model.json``
  ``unknown.distance_train_quantiles`` and ``distance_scales``); the folds' median ratio of the two says how much
  farther new photos lie (over the folds that record both: folds trained before the first was recorded lack it;
  ``bench/distance_ratio.py`` measures it for them from their weights). The final model's scales are its own
  training images' quantiles times that ratio, its distance threshold the folds' median threshold (both in those
  units). Measured on a Lite0 fold: new photos 2.7 times farther by Mahalanobis, as far by cosine (model card).
- **Reported accuracy.** The out-of-fold report: ``model.json`` ``metrics.split`` is ``"out-of-fold"``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seedlings.artifact import MODEL_JSON, VAL_PREDICTIONS, Calibration, UnknownRule
from seedlings.errors import SeedlingsError, UsageError
from seedlings.evaluation.calibrate import fit_calibration
from seedlings.evaluation.metrics import confusion_matrix, report_from_confusion
from seedlings.training.folds import fold_dirs, read_folds

DISTANCES = ("mahalanobis", "cosine")
HOW = ("train the recipe's folds first with the same --data and recipe flags: "
       "seedlings train --data DIR --out CV --folds 5 …, then --calibrate-from CV")


@dataclass
class FoldEvidence:
    """What the folds of a recipe say about a model of that recipe trained on all their images."""

    root: Path
    folds: int
    calibration: Calibration
    rule: UnknownRule  # the max-probability threshold; the distance part is added by novelty.fit_final
    report: dict  # the out-of-fold report (confusion matrix, per class), split "out-of-fold"
    distance_ratio: np.ndarray  # (Mahalanobis, cosine): held-out over training quantile, median over folds
    distance_threshold: float  # the folds' median distance threshold, in units of their scales
    ratio_folds: list[str]  # the folds that recorded both quantiles (the ratio's median is over them)
    logits: np.ndarray  # every image's out-of-fold logits (each fold's probabilities at its own temperature)
    labels: np.ndarray  # their true class indices, in the order of ``logits``
    per_fold: list[dict]  # each fold's scores on the images it held out (``read_folds``)

    def record(self) -> dict:
        return {"fitted_on": "out-of-fold", "folds_dir": str(self.root), "folds": self.folds, "n": self.report["n"],
                "ratio_from": self.ratio_folds}


def check_folder(root: str | Path) -> None:
    """Before any image is prepared: the folder holds finished fold runs (a typo stops the run now)."""
    folds = _finished(Path(root))
    if not folds:
        raise UsageError(f"--calibrate-from {root}: no finished fold runs (fold-I folders with model.json and "
                         f"{VAL_PREDICTIONS}); {HOW}")


def read_evidence(root: str | Path, classes: list[str], files: list[str], model: str, image_size: int) -> FoldEvidence:
    """The folds of ``root``, checked against this run: every fold finished, the same backbone and input size,
    the same classes, and between them every image of this run scored once."""
    root = Path(root)
    folds = fold_dirs(root)
    records = [_model_json(run) for run in folds]
    unfinished = [run.name for run, rec in zip(folds, records) if rec is None or
                  not (run / VAL_PREDICTIONS).is_file()]
    if not folds or unfinished:
        raise SeedlingsError(f"--calibrate-from {root}: unfinished folds ({', '.join(unfinished) or 'none found'}); "
                             f"finish them (seedlings train --folds K --out {root} …, it resumes) or {HOW}")
    for run, rec in zip(folds, records):
        _check_recipe(run, rec, model, image_size)
    fold_classes, fold_files, true, probs, per_fold = read_folds(folds)
    if fold_classes != list(classes):
        raise SeedlingsError(f"--calibrate-from {root}: its folds know the classes {', '.join(fold_classes)}, this run "
                             f"{', '.join(classes)}; calibrate from folds trained on the same --data")
    _check_same_images(root, set(fold_files), set(files))
    temps = np.concatenate([np.full(scores["n"], _temperature(run, rec))
                            for run, rec, scores in zip(folds, records, per_fold)])
    logits = temps[:, None] * np.log(np.clip(probs, 1e-12, None))
    labels = np.asarray([fold_classes.index(t) for t in true])
    calibration, rule = fit_calibration(logits, labels)
    calibration.extra.update(fitted_on="out-of-fold", folds=len(folds))
    rule.extra.update(fitted_on="out-of-fold")
    report = report_from_confusion(confusion_matrix(labels, probs.argmax(1), len(classes)), list(classes))
    report["split"] = "out-of-fold"
    ratio, threshold, ratio_folds = _distance_transfer(folds, records)
    return FoldEvidence(root, len(folds), calibration, rule, report, ratio, threshold, ratio_folds, logits, labels,
                        per_fold)


def _finished(root: Path) -> list[Path]:
    return [run for run in fold_dirs(root) if (run / MODEL_JSON).is_file() and (run / VAL_PREDICTIONS).is_file()]


def _model_json(run: Path) -> dict | None:
    path = run / MODEL_JSON
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SeedlingsError(f"{path}: not readable as JSON ({exc}); retrain that fold (delete {run} and run "
                             "train --folds K again)") from None


def _check_recipe(run: Path, rec: dict, model: str, image_size: int) -> None:
    theirs = (rec.get("backbone"), rec.get("image_size"))
    if theirs != (model, image_size):
        raise SeedlingsError(f"--calibrate-from: {run} is {theirs[0]} at {theirs[1]} px, this run {model} at "
                             f"{image_size} px; calibrate from folds of the same recipe")


def _temperature(run: Path, rec: dict) -> float:
    t = (rec.get("calibration") or {}).get("temperature")
    if not isinstance(t, (int, float)) or not t > 0:
        raise SeedlingsError(f"{run / MODEL_JSON}: calibration.temperature missing or not > 0; retrain that fold")
    return float(t)


def _check_same_images(root: Path, theirs: set[str], ours: set[str]) -> None:
    if theirs == ours:
        return
    only_ours, only_theirs = sorted(ours - theirs), sorted(theirs - ours)
    example = f"e.g. {only_ours[0]} is not in them" if only_ours else f"e.g. they scored {only_theirs[0]}"
    raise SeedlingsError(f"--calibrate-from {root}: its folds scored {len(theirs)} images, this run trains on "
                         f"{len(ours)} ({len(only_ours)} not scored by them, {len(only_theirs)} not in this run; "
                         f"{example}); calibrate from folds trained on the same --data")


def _distance_transfer(folds: list[Path], records: list[dict]) -> tuple[np.ndarray, float, list[str]]:
    """The median held-out/training quantile ratio of each distance over the folds that record both (folds
    trained before the training quantile was recorded have only the first), the folds' median threshold, and
    the names of the folds the ratio comes from."""
    ratios, thresholds, named = [], [], []
    for run, rec in zip(folds, records):
        unknown = rec.get("unknown") or {}
        if not isinstance(unknown.get("distance_threshold"), (int, float)):
            raise SeedlingsError(f"{run / MODEL_JSON}: unknown.distance_threshold missing (a fold trained without "
                                 "the feature-distance detector); retrain that fold")
        thresholds.append(float(unknown["distance_threshold"]))
        held, trained = unknown.get("distance_scales") or {}, unknown.get("distance_train_quantiles") or {}
        try:
            ratios.append([float(held[k]) / float(trained[k]) for k in DISTANCES])
            named.append(run.name)
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            continue
    if not ratios:
        raise SeedlingsError(f"--calibrate-from {folds[0].parent}: none of its folds records the distances' "
                             "training-image quantiles (model.json unknown.distance_train_quantiles; folds trained "
                             "before it existed lack it), so the 'not a seedling' distance cannot be scaled for a "
                             "model that trained on every image; retrain at least one fold with this version "
                             "(delete its folder, run train --folds K again)")
    return np.median(np.asarray(ratios), axis=0), float(np.median(thresholds)), named
