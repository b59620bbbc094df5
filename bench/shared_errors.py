"""Which validation images does every model get wrong? The floor under any ensemble of them.

    python bench/shared_errors.py MODEL [MODEL ...] [--data DIR] [--target 0.98] [--csv FILE]

MODEL: finished run folders or exported model folders, all trained on --data with the same
validation split (each is scored on its own split, and the script refuses splits that differ).
Prints each model's errors, the images that all of them misclassify, and how many errors a
given micro-F1 target allows on that split: if every model already misses that many images,
averaging them cannot reach the target. Also the micro-F1 of the mean of all the models'
calibrated probabilities (each model sees the images at its own size and normalisation, so
models of different backbones and image sizes can be averaged here, where `seedlings export`
ensembles only models that share their preprocessing). And each model against the first, paired on
the same images: how many only one of the two gets right, and the exact McNemar p-value of that
split (is the difference more than the luck of which images landed in validation?).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from seedlings.api import load_model
from seedlings.evaluation.metrics import mcnemar
from seedlings.evaluation.report import evaluate, misclassified
from seedlings.tables import print_table

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="MODEL")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--target", type=float, default=0.98, help="micro-F1 to compare the shared errors with")
    ap.add_argument("--csv", type=Path, help="write file,true,<model>… (each model's prediction) for every image "
                                             "that at least one model misclassifies")
    args = ap.parse_args()

    wrong, scored, probs, right = {}, None, [], {}
    for path in args.models:
        report = evaluate(load_model(path), args.data, progress=False)
        files = sorted(report["_files"])
        order = np.argsort(report["_files"])
        probs.append(report["_probs"][order])
        labels = np.asarray(report["_labels"])[order]
        if scored is not None and files != scored:
            sys.exit(f"{path}: scored on a different set of images ({report['scope']}) than {args.models[0]}; "
                     "compare models that share one validation split")
        scored = files
        wrong[path] = {r["file"]: r for r in misclassified(report)}
        right[path] = probs[-1].argmax(1) == labels
        print(f"{path}: {len(wrong[path])} errors, micro-F1 {report['f1_micro']:.4f} (n = {report['n']})")

    n = len(scored)
    allowed = int(n - args.target * n + 1e-9)
    counts = Counter(f for errors in wrong.values() for f in errors)
    in_all = sorted(f for f, c in counts.items() if c == len(wrong))
    rows = []
    for f in in_all:
        calls = [wrong[m][f] for m in args.models]
        predicted = Counter(c["predicted"] for c in calls)
        conf = [c["confidence"] for c in calls]
        rows.append([f, calls[0]["true"], ", ".join(f"{p} ×{k}" for p, k in predicted.most_common()),
                     f"{min(conf):.2f}–{max(conf):.2f}"])
    print_table(f"misclassified by all {len(wrong)} models", ["file", "true", "predicted", "confidence"], rows)
    print(f"images misclassified by at least one model: {len(counts)}; by all of them: {len(in_all)}")
    print(f"micro-F1 {args.target} on these {n} images allows {allowed} errors; the shared errors alone give at "
          f"most {(n - len(in_all)) / n:.4f}")
    mean_pred = np.mean(probs, axis=0).argmax(1)
    print(f"mean of the {len(probs)} models' probabilities: micro-F1 {(mean_pred == labels).mean():.4f} "
          f"({int((mean_pred != labels).sum())} errors)")
    first = args.models[0]
    for path in args.models[1:]:
        only_first, only_this = int((right[first] & ~right[path]).sum()), int((right[path] & ~right[first]).sum())
        print(f"{path} against {first}: {only_this} images only it gets right, {only_first} only the other; "
              f"exact McNemar p = {mcnemar(only_first, only_this):.2f}")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["file", "true", *args.models])
            for f in sorted(counts, key=lambda f: (-counts[f], f)):
                true = next(w[f]["true"] for w in wrong.values() if f in w)
                out.writerow([f, true, *(wrong[m][f]["predicted"] if f in wrong[m] else true for m in args.models)])
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
