"""Compare recipes on their out-of-fold predictions: every labelled image, each scored by a model that never saw it.

    python bench/oof_compare.py LABEL=CV_DIR [LABEL=CV_DIR …] [--common] [--png FILE]

CV_DIR: the --out folder of `seedlings train --folds K` (its oof.csv; while folds are still missing, the
finished folds' val_predictions.csv), or an oof.csv itself. Prints, for
each recipe, the out-of-fold micro-F1 (= accuracy), macro-F1, the Black-grass and Loose Silky-bent F1 (the
pair the models confuse), the number of folds and of images; then each recipe against the first on the
same images: how many only one of the two gets right, and the exact two-sided McNemar p-value. On 4,027
images a difference of 0.5 points is some 20 images, which this test can resolve; on one 603-image split
it could not. Recipes must share the images (the same data, any fold assignment); with --common, recipes
whose finished folds cover different images are compared on the images all of them scored (the table says
how many).

LABEL=CV_A+CV_B (any number of ``+``) is the ensemble of those recipes: each image's probabilities averaged over
them (each member's own out-of-fold prediction, so the ensemble is out-of-fold too). On one CPU an ensemble of
N models costs N forward passes a photo: an option for archives, not the single-model default.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from seedlings.artifact import VAL_PREDICTIONS
from seedlings.evaluation.metrics import confusion_matrix, mcnemar, report_from_confusion
from seedlings.tables import print_table
from seedlings.training.folds import OOF_CSV, OOF_JSON, fold_dirs, read_folds, read_predictions


def _finished_folds(path: Path) -> tuple[list[str], list[str], list[str], np.ndarray, str]:
    """The finished folds' predictions of a CV folder that has no oof.csv yet."""
    folds = [f for f in fold_dirs(path) if (f / VAL_PREDICTIONS).is_file()]
    if not folds:
        sys.exit(f"{path}: no {OOF_CSV} and no finished fold (train the folds first: seedlings train --folds K "
                 f"--out {path})")
    classes, files, true, probs, _ = read_folds(folds)
    return classes, files, true, probs, f"{len(folds)} ({'+'.join(f.name.split('-')[1] for f in folds)})"


def load(spec: str) -> tuple[str, dict]:
    label, _, path = spec.rpartition("=")
    members = [path] if Path(path).exists() or "+" not in path else path.split("+")
    loaded = [_load_one(Path(m), spec) for m in members]
    shared = set.intersection(*(set(r["files"]) for r in loaded))
    loaded = [r if len(r["files"]) == len(shared) else _only(r, shared) for r in loaded]  # finished folds differ
    first = loaded[0]
    for m, r in zip(members[1:], loaded[1:]):
        if r["files"] != first["files"] or r["classes"] != first["classes"]:
            sys.exit(f"{spec}: {m} predicts other classes or images than {members[0]}; an ensemble's members must "
                     "be trained on the same data")
    probs = np.mean([r["probs"] for r in loaded], axis=0)
    folds = "+".join(str(r["folds"]) for r in loaded)
    return label or path, {**first, "probs": probs, "pred": probs.argmax(1), "folds": folds}


def _load_one(path: Path, spec: str) -> dict:
    csv_path = path / OOF_CSV if path.is_dir() else path
    folds = None
    if path.is_dir() and not csv_path.is_file():
        classes, files, true, probs, folds = _finished_folds(path)
    elif not csv_path.is_file():
        sys.exit(f"{spec}: no {OOF_CSV} in {path} (train the folds first: seedlings train --folds K --out {path})")
    else:
        classes, files, true, probs = read_predictions(csv_path)
    order = np.argsort(files)
    summary = csv_path.parent / OOF_JSON  # beside an oof.csv only (not beside another predictions file)
    meta = json.loads(summary.read_text()) if csv_path.name == OOF_CSV and summary.is_file() else {}
    if folds is not None:
        meta = {"folds": folds}
    labels = np.asarray([classes.index(t) for t in true])[order]
    return {"files": [files[i] for i in order], "labels": labels, "classes": classes, "probs": probs[order],
            "folds": meta.get("folds", "?")}


def _only(r: dict, files: set[str]) -> dict:
    keep = np.asarray([f in files for f in r["files"]])
    folds = r["folds"] if keep.all() else f"part of {str(r['folds']).split(' ')[0]}"  # some of its folds' images
    return {**r, "files": [f for f, k in zip(r["files"], keep) if k], "labels": r["labels"][keep],
            "probs": r["probs"][keep], "pred": r["probs"][keep].argmax(1), "folds": folds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipes", nargs="+", metavar="LABEL=CV_DIR")
    ap.add_argument("--common", action="store_true",
                    help="compare on the images every recipe scored (recipes with different finished folds)")
    ap.add_argument("--png", type=Path, help="write the first recipe's out-of-fold confusion matrix here")
    args = ap.parse_args()
    runs = dict(load(s) for s in args.recipes)
    if args.common:
        shared = set.intersection(*(set(r["files"]) for r in runs.values()))
        if not shared:
            sys.exit("the recipes scored no image in common")
        runs = {label: _only(r, shared) for label, r in runs.items()}
    first_label, first = next(iter(runs.items()))
    rows = []
    for label, r in runs.items():
        if r["files"] != first["files"] or r["classes"] != first["classes"]:
            sys.exit(f"{label}: predicts other images or classes than {first_label}; compare recipes trained on "
                     "the same data (--common: on the images both scored)")
        report = report_from_confusion(confusion_matrix(r["labels"], r["pred"], len(r["classes"])), r["classes"])
        pc = report["per_class"]
        right, right_first = r["pred"] == r["labels"], first["pred"] == first["labels"]
        only_first, only_this = int((right_first & ~right).sum()), int((right & ~right_first).sum())
        p = mcnemar(only_first, only_this)
        versus = "—" if label == first_label else f"{only_this} / {only_first}, p = {p:.3f}"
        rows.append([label, r["folds"], report["n"], f"{report['f1_micro']:.4f}", int((~right).sum()),
                     f"{report['f1_macro']:.4f}", f"{pc.get('Black-grass', {}).get('f1', float('nan')):.3f}",
                     f"{pc.get('Loose Silky-bent', {}).get('f1', float('nan')):.3f}", versus])
    print_table("out-of-fold predictions", ["recipe", "folds", "images", "micro-F1", "errors", "macro-F1",
                                            "Black-grass F1", "Loose Silky-bent F1",
                                            f"only it / only {first_label} right, McNemar"], rows)
    if args.png:
        from seedlings.evaluation.plots import plot_confusion

        first = next(iter(runs.values()))
        cm = confusion_matrix(first["labels"], first["pred"], len(first["classes"]))
        plot_confusion(cm, first["classes"], args.png, f"{first_label}: out-of-fold, {len(first['labels'])} "
                       f"images, {first['folds']} folds")
        print(f"confusion matrix: {args.png}")


if __name__ == "__main__":
    main()
