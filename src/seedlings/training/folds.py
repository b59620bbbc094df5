"""K-fold cross-validation: every labelled image is validated once, by the one model that did not train on it.

    seedlings train --data DIR --out OUT --folds 5 [recipe flags]      every fold in turn, then oof.csv
    seedlings train --data DIR --out OUT/fold-2 --folds 5 --fold 2     one fold (a Kubernetes Indexed Job)

    OUT/fold-I/          a run folder per fold (its split.json names the fold)
    OUT/oof.csv          file, true, predicted, calibrated probability of each class: all N images
    OUT/oof.json         out-of-fold accuracy (= micro-F1), macro-F1, per class; per fold; per epoch

Why: one 603-image validation split cannot tell two recipes apart (a 0.5-point difference is 3
images); out-of-fold predictions over all 4,027 images can, with the exact paired test
(bench/oof_compare.py). Resumable: a finished fold (its model.json) is read, an interrupted one continues
from its checkpoint, the others start. Every fold ships its last epoch's weights unless --keep says
otherwise, so the images that score a fold never choose anything for it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from seedlings.artifact import MODEL_JSON, VAL_PREDICTIONS
from seedlings.config import TrainConfig
from seedlings.errors import SeedlingsError
from seedlings.evaluation.metrics import confusion_matrix, report_from_confusion
from seedlings.fileio import atomic_write_json, atomic_write_text
from seedlings.training.run_folder import CHECKPOINT

OOF_CSV = "oof.csv"
OOF_JSON = "oof.json"


def fold_dir(root: str | Path, fold: int) -> Path:
    return Path(root) / f"fold-{fold}"


def train_folds(cfg: TrainConfig, train_one: Callable[[TrainConfig, bool, bool], Path], resume: bool = False,
                progress: bool = True) -> Path:
    """Train each fold of ``cfg`` that is not finished yet with ``train_one(cfg, resume, progress)`` (fit.py's
    single run), then write the out-of-fold predictions."""
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    cfg.save(root / "config.yaml")
    for i in range(cfg.folds):
        run = fold_dir(root, i)
        if (run / MODEL_JSON).is_file() and (run / VAL_PREDICTIONS).is_file():
            print(f"fold {i + 1}/{cfg.folds}: finished earlier, read from {run}", flush=True)
            continue
        print(f"fold {i + 1}/{cfg.folds}: training in {run}", flush=True)
        fold_cfg = dataclasses.replace(cfg, out=str(run), fold=i)
        train_one(fold_cfg.validate(), resume or (run / CHECKPOINT).is_file(), progress)
    summary = write_oof(root)
    print(f"out-of-fold micro-F1 {summary['f1_micro']:.4f} on {summary['n']} images ({cfg.folds} folds); "
          f"{root / OOF_CSV}", flush=True)
    return root


def read_predictions(path: Path) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """(classes, files, true labels, probabilities) of a val_predictions.csv or an oof.csv."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows or rows[0][:2] != ["file", "true"]:
        raise SeedlingsError(f"{path}: not a predictions file (its header must start with file,true)")
    header = rows[0]
    classes = header[3:] if len(header) > 2 and header[2] == "predicted" else header[2:]
    first = len(header) - len(classes)
    try:
        probs = np.asarray([[float(x) for x in r[first:]] for r in rows[1:]], dtype=np.float64)
    except ValueError as exc:
        raise SeedlingsError(f"{path}: a probability is not a number ({exc})") from exc
    return classes, [r[0] for r in rows[1:]], [r[1] for r in rows[1:]], probs.reshape(len(rows) - 1, len(classes))


def read_folds(folds: list[Path]) -> tuple[list[str], list[str], list[str], np.ndarray, list[dict]]:
    """(classes, files, true labels, probabilities, per-fold scores) of these fold runs' validation predictions,
    in fold order."""
    classes, files, true, probs, per_fold = None, [], [], [], []
    for run in folds:
        c, f, t, p = read_predictions(run / VAL_PREDICTIONS)
        if classes is not None and c != classes:
            raise SeedlingsError(f"{run}: its classes differ from {folds[0]}'s; the folds must share one data set")
        classes = c
        files += f
        true += t
        probs.append(p)
        per_fold.append({"fold": run.name, "n": len(f),
                         "f1_micro": float(np.mean(np.asarray(t) == np.asarray(c)[p.argmax(1)]))})
    return classes, files, true, np.concatenate(probs), per_fold


def fold_dirs(root: Path) -> list[Path]:
    """``root``'s fold-I folders, in the order of I."""
    return sorted(root.glob("fold-*"), key=lambda p: int(p.name.split("-")[1]))


def write_oof(root: Path) -> dict:
    """Gather every fold's validation predictions into oof.csv and its scores into oof.json."""
    folds = fold_dirs(root)
    missing = [p.name for p in folds if not (p / VAL_PREDICTIONS).is_file()]
    if not folds or missing:
        raise SeedlingsError(f"{root}: folds without predictions ({', '.join(missing) or 'no fold-* folders'}); "
                             "train them first (seedlings train --folds K --out …)")
    classes, files, true, probs_all, per_fold = read_folds(folds)
    if len(set(files)) != len(files):
        raise SeedlingsError(f"{root}: an image is in the validation fold of two runs; the folds come from "
                             "different --split-seed or --folds values")
    order = np.argsort(files)
    write_predictions(root / OOF_CSV, classes, [files[i] for i in order], [true[i] for i in order], probs_all[order])
    labels = np.asarray([classes.index(t) for t in true])
    report = report_from_confusion(confusion_matrix(labels, probs_all.argmax(1), len(classes)), classes)
    summary = {"n": report["n"], "folds": len(folds), "f1_micro": report["f1_micro"],
               "f1_macro": report["f1_macro"], "per_class": report["per_class"], "per_fold": per_fold,
               "per_epoch": per_epoch(folds)}
    atomic_write_json(root / OOF_JSON, summary)
    return summary


def per_epoch(folds: list[Path]) -> list[dict]:
    """Out-of-fold accuracy after each epoch, from the folds' metrics.jsonl (validation accuracy × fold size):
    the curve that fixes the number of epochs, where "the best epoch" of one split would pick noise."""
    correct: dict[int, float] = {}
    seen: dict[int, int] = {}
    for run in folds:
        n = sum(1 for _ in open(run / VAL_PREDICTIONS, encoding="utf-8")) - 1
        path = run / "metrics.jsonl"
        for line in path.read_text().splitlines() if path.is_file() else ():
            row = json.loads(line)
            correct[row["epoch"]] = correct.get(row["epoch"], 0.0) + row["val_acc"] * n
            seen[row["epoch"]] = seen.get(row["epoch"], 0) + n
    total = max(seen.values(), default=0)
    return [{"epoch": e, "f1_micro": correct[e] / seen[e]} for e in sorted(seen) if seen[e] == total]


def write_predictions(path: Path, classes: list[str], files: list[str], true: list[str], probs: np.ndarray) -> None:
    """An oof.csv-format file: file,true,predicted and one probability column per class."""
    lines = [",".join(_quote(x) for x in ["file", "true", "predicted", *classes])]
    for f, t, p in zip(files, true, probs):
        lines.append(",".join([_quote(f), _quote(t), _quote(classes[int(p.argmax())]), *(f"{x:.6g}" for x in p)]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
