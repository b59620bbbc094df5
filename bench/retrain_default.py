"""Retrain the default model with the shipped recipe; print each stage's wall time and the figures it gives.

    python bench/retrain_default.py [--data DIR] [--out DIR] [--folds K] [--seeds N] [--distill A] [--final]
                                    [--image-size PX] [--scratch] [--resume]

The shipped recipe (since session 9) fine-tunes EfficientNet-Lite0 from its ImageNet weights with the
fine-tuning recipe (10 epochs; `config.FINETUNE`) at 192 px, weight seed 0 on validation split 0, then exports it:

    seedlings train --data DIR --out OUT/m0 --pretrained --image-size 192 --keep last --seed 0 --split-seed 0 \
        --threads 2
    seedlings export OUT/m0 --out OUT/model

(192 px since session 17, ``--image-size``; ``--keep last``: the recipe's 10 epochs, fixed on the out-of-fold curve,
not the epoch the validation split likes best.)

Stages, each timed:

1. ``--folds K`` (K ≥ 2): the recipe's K-fold cross-validation first, for every weight seed of ``--seeds``:
   ``seedlings train --folds K --split-seed 0 --seed S --out OUT/cv-sS`` (resumable: finished folds are read),
   then its out-of-fold micro-F1 on every labelled image (`bench/oof_compare.py` compares recipes on them).
2. ``--distill A`` (needs ``--folds``): the student's K-fold, seed 0, distilled from seed 0's out-of-fold
   predictions (``--teacher OUT/cv-s0/oof.csv --teacher-weight A``, ``OUT/cv-distill-s0``).
3. the shipped model: trained on the validation split and exported, as above; with ``--final`` (needs
   ``--folds``) on every image instead (``--val-fraction 0``), calibrated from the folds of its recipe
   (``--calibrate-from``: the student's with ``--distill``, else seed 0's; training/final.py), and distilled
   from the same teacher as the student with ``--distill``.

Last, the exported model's `unknown` flag on both generated probe sets, against the target (≤ 1 % of non-plant
images accepted): a model trained on every image has a transferred distance rule, and the first one missed it
(model card *Session 14*).

``--image-size PX`` trains every stage at PX pixels instead of the default model's 192 (`config.FINETUNE`'s 160 px,
the default of sessions 9–16: ``--image-size 160``; model card *Session 17*).
``--scratch`` is the previous default instead (resnet10t from scratch at 64 px, 150 epochs, 72 min).
docs/MODEL_CARD.md quotes the output.
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
DEFAULT_SIZE = 192  # the default model's input size since session 17 (config.FINETUNE keeps 160 for users' runs)


def seedlings(args: list[str], log: Path | None = None) -> None:
    cmd = [sys.executable, "-m", "seedlings", *args]
    print("$", " ".join(cmd) + (f" 2> {log}" if log else ""), flush=True)
    with open(log, "a") if log else open(os.devnull, "w") as err:
        if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=err if log else None).returncode:
            sys.exit(f"failed: {' '.join(cmd)}" + (f"; see {log}" if log else ""))


def recipe_args(data: Path, scratch: bool = False, image_size: int | None = None) -> list[str]:
    """The `seedlings train` flags every stage shares: the data, split 0, the fine-tuning recipe (or the
    from-scratch one), the input size when it is not the recipe's own."""
    recipe = ["--data", str(data), "--split-seed", "0", "--threads", str(os.cpu_count() or 1)]
    recipe += [] if scratch else ["--pretrained"]
    return recipe + ([] if image_size is None else ["--image-size", str(image_size)])


def keep_args(scratch: bool = False, final: bool = False) -> list[str]:
    """The shipped fine-tuned model keeps its last epoch: the recipe's epochs were fixed on the out-of-fold curve, and
    the split it is calibrated on must not also choose its epoch (issue #20). The from-scratch recipe kept its best
    epoch; a model on every image has no split and keeps its last anyway."""
    return [] if scratch or final else ["--keep", "last"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("runs/default-retrain"))
    ap.add_argument("--folds", type=int, default=0, help="K-fold cross-validation of the recipe first (e.g. 5)")
    ap.add_argument("--seeds", type=int, default=1, help="weight seeds of the cross-validation (0 … N-1)")
    ap.add_argument("--scratch", action="store_true", help="the previous default: resnet10t from scratch, 64 px")
    ap.add_argument("--distill", type=float, metavar="A",
                    help="also the recipe distilled from seed 0's out-of-fold predictions, teacher weight A")
    ap.add_argument("--final", action="store_true",
                    help="ship a model trained on every image, calibrated from the recipe's folds")
    ap.add_argument("--image-size", type=int, metavar="PX",
                    help=f"input size of every stage (default: {DEFAULT_SIZE}, the default model's; --scratch: 64)")
    ap.add_argument("--resume", action="store_true", help="continue runs from their checkpoints")
    args = ap.parse_args()
    if (args.distill is not None or args.final) and not args.folds:
        ap.error("--distill and --final need the recipe's folds: add --folds K (e.g. 5)")
    args.out.mkdir(parents=True, exist_ok=True)
    size = args.image_size if args.image_size or args.scratch else DEFAULT_SIZE
    recipe = recipe_args(args.data, args.scratch, size)
    stages: list[tuple[str, float]] = []

    for seed in range(args.seeds if args.folds else 0):
        started, cv = time.perf_counter(), args.out / f"cv-s{seed}"
        seedlings(["train", *recipe, "--seed", str(seed), "--folds", str(args.folds), "--out", str(cv)],
                  Path(f"{cv}.log"))
        summary = json.loads((cv / "oof.json").read_text())
        stages.append((f"{args.folds}-fold cross-validation, seed {seed}", time.perf_counter() - started))
        print(f"seed {seed}: out-of-fold micro-F1 {summary['f1_micro']:.4f} on {summary['n']} images "
              f"({summary['folds']} folds)", flush=True)

    calibrate_from, teacher = args.out / "cv-s0", []
    if args.distill is not None:
        started, cv = time.perf_counter(), args.out / "cv-distill-s0"
        teacher = ["--teacher", str(args.out / "cv-s0" / "oof.csv"), "--teacher-weight", str(args.distill)]
        seedlings(["train", *recipe, *teacher, "--seed", "0", "--folds", str(args.folds), "--out", str(cv)],
                  Path(f"{cv}.log"))
        summary = json.loads((cv / "oof.json").read_text())
        stages.append((f"{args.folds}-fold cross-validation, distilled", time.perf_counter() - started))
        print(f"distilled: out-of-fold micro-F1 {summary['f1_micro']:.4f} on {summary['n']} images (soft labels "
              f"from teacher folds that saw the scored fold: read with the leak caveat)", flush=True)
        calibrate_from = cv

    started, run, model = time.perf_counter(), args.out / "m0", args.out / "model"
    every_image = ["--val-fraction", "0", "--calibrate-from", str(calibrate_from)] if args.final else []
    seedlings(["train", *recipe, *teacher, *every_image, *keep_args(args.scratch, args.final), "--seed", "0",
               "--out", str(run),
               *(["--resume"] if args.resume else [])], Path(f"{run}.log"))
    stages.append(("train the shipped model" + (" on every image" if args.final else ""),
                   time.perf_counter() - started))
    started = time.perf_counter()
    seedlings(["export", str(run), "--out", str(model)])
    stages.append(("export", time.perf_counter() - started))

    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    metrics = ModelFile.load(model).metrics
    kept = f"best epoch {metrics['best_epoch']}" if metrics.get("best_epoch") else "the last epoch"
    print(f"model: {metrics['split']} micro-F1 {metrics['f1_micro']:.4f} (n = {metrics['n']}; {kept} of "
          f"{len(rows)}); {(model / 'model.onnx').stat().st_size / 1e6:.1f} MB; "
          f"{sum(r['epoch_s'] for r in rows) / len(rows):.0f} s per epoch")
    probe_check(model)
    for stage, seconds in stages:
        print(f"{stage:<45} {seconds / 60:6.1f} min")
    print(f"{'all':<45} {sum(s for _, s in stages) / 60:6.1f} min")


def probe_check(model_dir: Path, target: float = 0.01) -> bool:
    """The `unknown` flag on both generated probe sets (200 non-plant images each): a model trained on every image
    has a transferred distance rule, so it ships only if this holds (model card, Session 14)."""
    from seedlings.api import load_model
    from seedlings.evaluation import ood

    model = load_model(model_dir)
    rates = {}
    for seed in (0, 1):
        probes = ood.generate(n_per_kind=40, size=model.spec.image_size, seed=seed)
        rates[seed] = ood.false_accept(model, probes)
    ok = all(r <= target for r in rates.values())
    print("unknown flag, false-accept on the generated probes: "
          + ", ".join(f"seed {seed} {r:.1%}" for seed, r in rates.items())
          + (f" (target ≤ {target:.0%}: met)" if ok else f" — NOT READY TO SHIP: the target is ≤ {target:.0%}"),
          flush=True)
    return ok


if __name__ == "__main__":
    main()
