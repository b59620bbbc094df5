"""Test-time augmentation on out-of-fold predictions: each fold model scores its own held-out images with and
without the 8 exact symmetries of a top-down photo (quarter turns × flips), paired on the same images.

    python bench/oof_tta.py CV_DIR [--data DIR] [--threads N]

CV_DIR: the --out folder of `seedlings train --folds K`. Every finished fold-I/ that still holds its weights
(model.json written) is scored on its validation fold by `seedlings evaluate`'s code, once plain and once
with --tta; folds whose weights are gone (kept as predictions only) are left out, and the table says how many folds
and images it covers. Writes CV_DIR/tta-plain.csv and CV_DIR/tta.csv (the oof.csv format) and prints
`bench/oof_compare.py`'s table for the two: micro-F1 each, and how many images only one of them gets right
with the exact McNemar p-value.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

from seedlings.api import load_model
from seedlings.evaluation.report import evaluate
from seedlings.training.folds import fold_dirs, write_predictions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cv_dir", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    folds = [p for p in fold_dirs(args.cv_dir)  # finished (model.json written) and still holding their weights
             if (p / "weights.safetensors").is_file() and (p / "model.json").is_file()]
    if not folds:
        sys.exit(f"{args.cv_dir}: no fold-I/ with its weights (weights.safetensors); train the folds first")
    out = {False: ([], [], []), True: ([], [], [])}
    classes = None
    for fold in folds:
        model = load_model(fold, threads=args.threads)
        classes = list(model.classes)
        for tta in (False, True):
            report = evaluate(model, args.data, tta=tta, progress=False)
            files, true, probs = out[tta]
            files += report["_files"]
            true += [classes[i] for i in report["_labels"]]
            probs.append(report["_probs"])
            print(f"{fold.name}: {'TTA ' if tta else 'plain'} micro-F1 {report['f1_micro']:.4f} on {report['n']} "
                  f"held-out images", flush=True)
    paths = {}
    for tta, (files, true, probs) in out.items():
        order = np.argsort(files)
        paths[tta] = args.cv_dir / ("tta.csv" if tta else "tta-plain.csv")
        write_predictions(paths[tta], classes, [files[i] for i in order], [true[i] for i in order],
                   np.concatenate(probs)[order])
    print(f"{len(folds)} fold(s) with weights: {', '.join(f.name for f in folds)}")
    subprocess.run([sys.executable, str(Path(__file__).with_name("oof_compare.py")), f"plain={paths[False]}",
                    f"TTA={paths[True]}"], check=True)


if __name__ == "__main__":
    main()
