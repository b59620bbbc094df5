"""Retrain the default model with the shipped recipe and print validation micro-F1, wall time, images/s.

    python bench/retrain_default.py [--data DIR] [--out DIR] [--members N] [--epochs E] [--model M]
                                    [--image-size S]

The shipped recipe (the defaults here) is the training defaults: one resnet10t from scratch at
64 px for 150 epochs, exported as it is:

    seedlings train --data DIR --out OUT/m0 --epochs 150 --seed 0 --split-seed 0 --threads 2
    seedlings export OUT/m0 --out OUT/model

``--pretrained`` fine-tunes EfficientNet-Lite0 from its ImageNet weights with the fine-tuning
recipe instead (160 px; ``--image-size 128`` or ``192`` for the other rows of the model card's
transfer-learning table).

``--members 2 --epochs 130`` is the ensemble the model card also measured: two networks trained
at the same time, one process and one CPU thread each, seeds 0 and 1 on one validation split,
exported as one mean-probability model with float16 weights:

    seedlings train --data DIR --out OUT/m0 --epochs 130 --seed 0 --split-seed 0 --threads 1 &
    seedlings train --data DIR --out OUT/m1 --epochs 130 --seed 1 --split-seed 0 --threads 1 &
    wait
    seedlings export OUT/m0 OUT/m1 --half-weights --out OUT/model

docs/MODEL_CARD.md quotes the output of both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from seedlings.artifact import ModelFile

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("runs/default-retrain"))
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--epochs", type=int, help="epochs (default: the recipe's)")
    ap.add_argument("--pretrained", action="store_true",
                    help="fine-tune EfficientNet-Lite0 from ImageNet weights (the fine-tuning recipe) instead of the "
                         "shipped from-scratch recipe; the model card compares both")
    ap.add_argument("--model", help="backbone (default: the training default)")
    ap.add_argument("--image-size", type=int, help="image size (default: the training default)")
    ap.add_argument("--resume", action="store_true", help="continue the members' runs from their checkpoints")
    args = ap.parse_args()
    threads = max(1, (os.cpu_count() or 1) // args.members)
    runs = [args.out / f"m{i}" for i in range(args.members)]
    cmds = [[sys.executable, "-m", "seedlings", "train", "--data", str(args.data), "--out", str(run),
             "--seed", str(i), "--split-seed", "0", "--threads", str(threads)]
            + (["--pretrained"] if args.pretrained else []) + (["--epochs", str(args.epochs)] if args.epochs else [])
            + (["--model", args.model] if args.model else []) + (["--image-size", str(args.image_size)]
                                                                  if args.image_size else [])
            + (["--resume"] if args.resume else []) for i, run in enumerate(runs)]
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    logs = [open(f"{run}.log", "a") for run in runs]
    procs = []
    for cmd, run, log in zip(cmds, runs, logs):
        print("$", " ".join(cmd), f"2> {run}.log", flush=True)
        procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log))
    failed = [p.wait() != 0 for p in procs]
    for log in logs:
        log.close()
    if any(failed):
        sys.exit(f"a member failed; see {', '.join(f'{r}.log' for r in runs)}")
    trained = time.perf_counter() - start
    model = args.out / "model"
    export = [sys.executable, "-m", "seedlings", "export", *map(str, runs), "--out", str(model)]
    export += ["--half-weights"] if len(runs) > 1 else []
    print("$", " ".join(export), flush=True)
    subprocess.run(export, check=True)
    wall = time.perf_counter() - start
    rates = []
    for run in runs:
        metrics = ModelFile.load(run).metrics
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        rates.append(sum(r["train_images_per_s"] for r in rows) / len(rows))
        print(f"{run.name}: validation micro-F1 {metrics['f1_micro']:.4f} (best epoch "
              f"{metrics['best_epoch']}/{len(rows)}); {rates[-1]:.1f} images/s; "
              f"{sum(r['epoch_s'] for r in rows) / len(rows):.0f} s per epoch")
    metrics = ModelFile.load(model).metrics
    print(f"model: validation micro-F1 {metrics['f1_micro']:.4f} (n = {metrics['n']}); "
          f"{(model / 'model.onnx').stat().st_size / 1e6:.1f} MB")
    print(f"wall time {wall / 60:.1f} min ({trained / 60:.1f} min training); "
          f"training {sum(rates):.1f} images/s in all")


if __name__ == "__main__":
    main()
