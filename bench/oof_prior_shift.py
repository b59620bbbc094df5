"""Would a per-class bias on the logits fix the grass pair? Cross-fitted on the out-of-fold predictions.

    python bench/oof_prior_shift.py CV_DIR [CV_DIR …]

For each held-out fold I of a `seedlings train --folds K` run, two corrections are fitted on the other folds'
held-out predictions only and applied to fold I's (so no image scores a correction fitted on itself):

- ``bias``: a bias per class added to the log-probabilities, fitted by minimising the cross-entropy (a prior
  correction: the classes' frequencies as the folds' predictions see them);
- ``grass shift``: one bias on Black-grass against every other class, the value in −3 … 3 (step 0.1) that
  scores best on the other folds (the smallest in size among ties): the models confuse Black-grass with Loose
  Silky-bent more than anything else, and Black-grass has 2.5 times fewer photos.

Prints the out-of-fold micro-F1 without and with each correction, the exact McNemar test against none, and the
shifts each fold chose. A correction that does not beat `none` is not worth shipping.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from seedlings.artifact import VAL_PREDICTIONS
from seedlings.evaluation.metrics import mcnemar
from seedlings.tables import print_table
from seedlings.training.folds import fold_dirs, read_folds

GRASS = "Black-grass"
SHIFTS = np.round(np.linspace(-3, 3, 61), 2)


def load_folds(root: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Classes, labels, log-probabilities and the fold of each held-out image of a CV folder's finished folds."""
    folds = [f for f in fold_dirs(root) if (f / VAL_PREDICTIONS).is_file()]
    if len(folds) < 2:
        sys.exit(f"{root}: {len(folds)} finished fold(s); a cross-fitted correction needs two or more "
                 "(train them: seedlings train --folds K)")
    classes, _, true, probs, per_fold = read_folds(folds)  # in fold order: fold i's rows are contiguous
    labels = np.asarray([classes.index(t) for t in true])
    fold = np.repeat(np.arange(len(folds)), [f["n"] for f in per_fold])
    return classes, labels, np.log(np.clip(probs, 1e-9, 1.0)), fold


def fit_bias(logp: np.ndarray, labels: np.ndarray, steps: int = 500, lr: float = 0.5) -> np.ndarray:
    """The bias per class that minimises the mean cross-entropy of softmax(logp + b) (convex; gradient descent)."""
    b = np.zeros(logp.shape[1])
    target = np.bincount(labels, minlength=logp.shape[1]) / len(labels)
    for _ in range(steps):
        z = logp + b
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        b -= lr * (p.mean(0) - target)
    return b


def fit_shift(logp: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The bias on class k that scores best (accuracy), the smallest in size among ties."""
    def score(s: float) -> float:
        z = logp.copy()
        z[:, k] += s
        return float((z.argmax(1) == labels).mean())
    scores = {float(s): score(s) for s in SHIFTS}
    best = max(scores.values())
    return min((s for s, v in scores.items() if v == best), key=abs)


def corrected(classes: list[str], labels: np.ndarray, logp: np.ndarray, fold: np.ndarray) -> dict:
    """Each image's prediction with no correction and with each cross-fitted one; the grass shift per fold."""
    k = classes.index(GRASS)
    pred = {"none": logp.argmax(1), "bias": np.empty(len(labels), int), "grass shift": np.empty(len(labels), int)}
    shifts = []
    for i in np.unique(fold):
        fit, held = fold != i, fold == i
        pred["bias"][held] = (logp[held] + fit_bias(logp[fit], labels[fit])).argmax(1)
        s = fit_shift(logp[fit], labels[fit], k)
        z = logp[held].copy()
        z[:, k] += s
        pred["grass shift"][held] = z.argmax(1)
        shifts.append(s)
    return {"pred": pred, "shifts": shifts}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path, help="--out folders of `seedlings train --folds K`")
    args = ap.parse_args()
    rows = []
    for root in args.runs:
        classes, labels, logp, fold = load_folds(root)
        if GRASS not in classes:
            sys.exit(f"{root}: no {GRASS} class; this bench is about the seedlings species")
        out = corrected(classes, labels, logp, fold)
        right = {name: p == labels for name, p in out["pred"].items()}
        for name, r in right.items():
            only, other = int((r & ~right["none"]).sum()), int((~r & right["none"]).sum())
            vs = "—" if name == "none" else f"{only} / {other}, p = {mcnemar(only, other):.3f}"
            shifts = " ".join(f"{s:+.1f}" for s in out["shifts"]) if name == "grass shift" else ""
            rows.append([root.name, str(len(labels)), name, f"{r.mean():.4f}", str(int((~r).sum())), vs, shifts])
    print_table("Cross-fitted logit corrections on the out-of-fold predictions",
                ["run", "images", "correction", "micro-F1", "errors", "only it / only none right", "shift per fold"],
                rows)


if __name__ == "__main__":
    main()
