"""Retrain the default model with the shipped recipe and print validation micro-F1, wall time, images/s.

    python bench/retrain_default.py [--data DIR] [--out RUN_DIR]

The recipe is the training defaults (`seedlings train --data DIR --out RUN`): resnet10t from
scratch at 64 px for 150 epochs; see docs/MODEL_CARD.md for the figures it gave.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("runs/default-retrain"))
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()
    cmd = [sys.executable, "-m", "seedlings", "train", "--data", str(args.data), "--out", str(args.out)]
    cmd += ["--resume"] if args.resume else []
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - start
    meta = json.loads((args.out / "model.json").read_text())
    rows = [json.loads(x) for x in (args.out / "metrics.jsonl").read_text().splitlines()]
    rate = sum(r["train_images_per_s"] for r in rows) / len(rows)
    print(f"validation micro-F1 {meta['metrics']['f1_micro']:.4f} (n = {meta['metrics']['n']}, "
          f"best epoch {meta['metrics']['best_epoch']}/{len(rows)})")
    print(f"wall time {wall / 60:.1f} min; training {rate:.1f} images/s on average; "
          f"{sum(r['epoch_s'] for r in rows) / len(rows):.0f} s per epoch")


if __name__ == "__main__":
    main()
