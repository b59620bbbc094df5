"""Few photos, as a new user trains: `seedlings train --data MY_PHOTOS --pretrained`, the defaults, several draws.

    python bench/few_photos.py [--data DIR] [--per-species 16] [--draws 5] [--out runs/few-photos] [-- FLAGS…]

Each draw d takes, per species, ``--per-species`` training photos and as many others to score on, at random
(seed d) from the whole folder, and trains with `seedlings train --pretrained` and nothing else: the fine-tuning
recipe, whose floor of 200 optimizer steps trains 16 photos a species at batch 16 for 17 epochs (flags after
``--`` are added, to compare a change of recipe on the same draws; ``-- --min-steps 0`` is the recipe without
the floor). The runs keep their best epoch, chosen on those scoring photos as a user's run would choose it, so
the *last epoch* column (from metrics.jsonl, chosen by nothing) is the honest one beside it. Prints a table per
draw and the mean and spread; the wall time of each run (data preparation included) is printed with the CPU's
flags and the arithmetic the run chose (``--precision auto``: bf16 on CPUs with AVX512-BF16 or AMX). The folders
are symbolic links in a temporary directory: no image is copied. A draw whose run finished earlier in --out is
read, not trained again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from predict_bench import cpu_line  # bench/ is on the path of a script run from it

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"
IMAGES = {".png", ".jpg", ".jpeg"}


def draw(data: Path, per_species: int, seed: int, work: Path) -> tuple[Path, Path]:
    """Training and scoring folders of one draw: disjoint, ``per_species`` photos each per species."""
    rng = random.Random(seed)
    train, val = work / f"draw-{seed}" / "train", work / f"draw-{seed}" / "val"
    for species in sorted(p for p in data.iterdir() if p.is_dir()):
        photos = sorted(p for p in species.iterdir() if p.suffix.lower() in IMAGES)
        rng.shuffle(photos)
        if len(photos) < 2 * per_species:
            sys.exit(f"{species}: {len(photos)} photos, fewer than the {2 * per_species} a draw needs; lower "
                     "--per-species")
        for folder, part in ((train, photos[:per_species]), (val, photos[per_species:2 * per_species])):
            (folder / species.name).mkdir(parents=True, exist_ok=True)
            for photo in part:
                os.symlink(photo, folder / species.name / photo.name)
    return train, val


def scores(run: Path) -> dict:
    meta = json.loads((run / "model.json").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return {"best": meta["metrics"]["f1_micro"], "best_epoch": meta["metrics"]["best_epoch"],
            "last": rows[-1]["val_f1_micro"], "epochs": len(rows), "precision": meta["training"]["precision"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--per-species", type=int, default=16)
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--first-draw", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/few-photos"))
    ap.add_argument("flags", nargs="*", help="after --: flags added to `seedlings train --pretrained`")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: no such folder; pass --data DIR (one sub-folder per species)")
    args.data = args.data.resolve()  # the links point at absolute paths: they live in a temporary folder
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"{cpu_line()}; extra flags: {' '.join(args.flags) or 'none'}")
    results = []
    with tempfile.TemporaryDirectory(prefix="seedlings-few-") as tmp:
        for seed in range(args.first_draw, args.first_draw + args.draws):
            run = args.out / f"draw-{seed}"
            wall = None
            if not (run / "model.json").is_file():
                train, val = draw(args.data, args.per_species, seed, Path(tmp))
                cmd = [sys.executable, "-m", "seedlings", "train", "--data", str(train), "--val-data", str(val),
                       "--out", str(run), "--pretrained", *args.flags]
                start = time.perf_counter()
                with open(f"{run}.log", "w") as log:
                    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
                wall = time.perf_counter() - start
            r = {"draw": seed, **scores(run), "wall_min": None if wall is None else round(wall / 60, 2)}
            results.append(r)
            print(f"draw {seed}: best epoch {r['best']:.4f} (epoch {r['best_epoch']} of {r['epochs']}), last epoch "
                  f"{r['last']:.4f}, {r['precision']}, "
                  + ("read from earlier run" if wall is None else f"{wall / 60:.1f} min"), flush=True)
    for key in ("best", "last"):
        values = [r[key] for r in results]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{key:>4} epoch: mean {statistics.mean(values):.4f} ± {spread:.4f} (sd), min {min(values):.4f}, "
              f"max {max(values):.4f}, {len(values)} draws of {args.per_species} photos per species")
    (args.out / "few_photos.json").write_text(json.dumps({"flags": args.flags, "cpu": cpu_line(),
                                                          "per_species": args.per_species, "draws": results},
                                                         indent=2))


if __name__ == "__main__":
    main()
