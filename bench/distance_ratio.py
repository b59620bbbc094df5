"""How much farther new photos lie from the species than a model's own training photos, fold by fold.

    python bench/distance_ratio.py CV_DIR [--data DIR] [--threads N]

A model trained on every image (`train --val-fraction 0 --calibrate-from CV_DIR`, training/final.py) scales its
"not a seedling" distances by its training photos' 99th percentile times its folds' median ratio of held-out to
training percentile. Runs record both percentiles since that option exists; this script measures them for
fold runs trained before, from their weights: for every fold-I/ of CV_DIR that still has weights.safetensors,
the detector is fitted on the fold's training images as training fits it (models/novelty.py), and the 99th
percentile of each distance is taken on its training and on its held-out images. Prints a row per fold and the
median and spread of the ratios: a ratio that moves little between folds transfers to the final model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from seedlings.artifact import SPLIT, WEIGHTS
from seedlings.config import TrainConfig
from seedlings.data import Split, Subset, prepare
from seedlings.models import create_model
from seedlings.models.checkpoint import load_weights
from seedlings.models.novelty import Detector, features
from seedlings.training.folds import fold_dirs

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def fold_quantiles(run: Path, data: Path, caches: dict) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) 99th percentiles of (Mahalanobis, cosine) for one fold run; ``caches`` keeps each
    prepared data set (per preprocessing) for the next fold."""
    import yaml

    cfg = TrainConfig.from_dict(yaml.safe_load((run / "config.yaml").read_text()), str(run / "config.yaml"))
    spec = cfg.preprocess_spec()
    if spec not in caches:
        caches[spec] = prepare(str(data), spec, progress=False)
    prepared = caches[spec]
    split = Split.load(run / SPLIT)
    model = create_model(cfg.model, len(prepared.classes))
    model.load_state_dict(load_weights(run / WEIGHTS))
    model.eval()
    train = Subset(prepared.images, prepared.labels, prepared.subset(split.train), prepared.files)
    val_rows = prepared.subset(split.val)
    detector = Detector.fit(model, train, spec, len(prepared.classes))
    return detector.train_quantiles, detector.quantiles(features(model, prepared.images, val_rows, spec))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cv_dir", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    folds = [p for p in fold_dirs(args.cv_dir) if (p / WEIGHTS).is_file() and (p / SPLIT).is_file()]
    if not folds:
        sys.exit(f"{args.cv_dir}: no fold-I/ with its weights ({WEIGHTS}) and {SPLIT}; train the folds first")
    ratios, caches = [], {}
    print(f"{'fold':<8} {'maha train':>11} {'held-out':>10} {'ratio':>6}   {'cos train':>9} {'held-out':>9} "
          f"{'ratio':>6}")
    for run in folds:
        train, held = fold_quantiles(run, args.data, caches)
        ratios.append(held / train)
        print(f"{run.name:<8} {train[0]:11.1f} {held[0]:10.1f} {held[0] / train[0]:6.3f}   {train[1]:9.4f} "
              f"{held[1]:9.4f} {held[1] / train[1]:6.3f}", flush=True)
    for k, name in enumerate(("Mahalanobis", "cosine")):
        values = [r[k] for r in ratios]
        spread = f", sd {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        print(f"{name} ratio: median {statistics.median(values):.3f} (min {min(values):.3f}, max {max(values):.3f}"
              f"{spread}; {len(values)} folds)")


if __name__ == "__main__":
    main()
