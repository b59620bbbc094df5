"""The training images of one outer fold, as a folder of symbolic links: the data of a nested K-fold teacher.

    python bench/nested_folds.py CV_DIR --fold I --data DIR --out NESTED_DATA

A student scored on outer fold I must learn from soft labels made by teachers that never saw fold I. This
links every photo of --data that is not in CV_DIR/fold-I's validation predictions into NESTED_DATA (same
relative paths, so file identities match), never copying one. Then, for outer fold 0:

    seedlings train --data NESTED_DATA --out runs/nested0/cv --pretrained --seed 0 --split-seed 0 --folds 4
    seedlings train --data DIR --out runs/cv-clean --pretrained --seed 0 --split-seed 0 --folds 5 --fold 0 \\
        --teacher runs/nested0/cv/oof.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedlings.artifact import VAL_PREDICTIONS
from seedlings.training.folds import read_predictions

SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cv_dir", type=Path)
    ap.add_argument("--fold", type=int, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    held = args.cv_dir / f"fold-{args.fold}" / VAL_PREDICTIONS
    if not held.is_file():
        sys.exit(f"{held}: not there; train that fold first (seedlings train --folds K --fold {args.fold})")
    outer = set(read_predictions(held)[1])
    data = args.data.resolve()
    linked = 0
    for photo in sorted(p for p in data.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()):
        rel = photo.relative_to(data).as_posix()
        if rel in outer:
            continue
        dest = args.out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.is_symlink():
            dest.symlink_to(photo)
        linked += 1
    missing = outer - {p.relative_to(data).as_posix() for p in data.rglob("*") if p.is_file()}
    if missing:
        sys.exit(f"{len(missing)} images of fold {args.fold} are not in {args.data} (first: {sorted(missing)[0]}); "
                 "pass the --data the folds were trained on")
    print(f"{linked} photos linked into {args.out}; {len(outer)} of fold {args.fold} left out")


if __name__ == "__main__":
    main()
