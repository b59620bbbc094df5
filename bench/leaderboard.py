"""Backbone leaderboard: several backbones trained on the same split at an equal, stated budget.

    python bench/leaderboard.py [--data DIR] [--minutes 10 | --epochs 3] [--image-size 64] [--models a,b,c]
                                [--out docs/leaderboard]

A name ending in ``+imagenet`` (``efficientnet_lite0+imagenet``) starts from the backbone's ImageNet
weights (``--pretrained``, so the fine-tuning recipe's learning rate and EMA) instead of from scratch.

The budget is either the same number of epochs for every backbone (--epochs) or about the same training
time on this machine (--minutes): then each backbone gets as many epochs as its measured training speed
(images/s of a few optimiser steps, scaled by the loader and validation overhead) fits in that time.
Each backbone is trained by `seedlings train` (same seed, so the same stratified split), exported to
ONNX, and timed on single images with ONNX Runtime. `seedlings runs compare` makes the table; this
script adds the epochs, inference latency and writes leaderboard.md + leaderboard.png into --out.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from seedlings.artifact import ModelFile
from seedlings.export.onnx import run_config

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"
DEFAULT_MODELS = "resnet10t,mobilenetv2,resnet50,xception"


def seedlings(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "seedlings", *args], check=True)


def latency_ms(model_dir: Path) -> float:
    from seedlings.api import load_model

    model = load_model(model_dir)
    image = np.random.default_rng(0).integers(0, 256, (1, model.spec.image_size, model.spec.image_size, 3),
                                              dtype=np.uint8)
    times = []
    for _ in range(50):
        t = time.perf_counter()
        model.probabilities(image)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


# A seedlings epoch takes this much longer than its optimiser steps alone (loading, augmentation, the
# validation pass, the checkpoint): resnet10t at 64 px here, 22–28 s per epoch against 23–25 s of steps alone.
EPOCH_OVERHEAD = 1.15


def epochs_for(name: str, minutes: float, image_size: int, n_train: int) -> tuple[int, float]:
    """How many epochs of ``name`` fit in ``minutes`` here, from the training speed of a few steps."""
    from train_throughput import model_rate

    rate = model_rate(name, image_size, batch=64, steps=4)
    epoch_s = n_train / rate * EPOCH_OVERHEAD
    return max(1, int(minutes * 60 / epoch_s)), rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--runs", type=Path, default=Path("runs/leaderboard"))
    ap.add_argument("--out", type=Path, default=Path("docs/leaderboard"))
    ap.add_argument("--models", default=DEFAULT_MODELS)
    budget = ap.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="the same number of epochs for every backbone")
    budget.add_argument("--minutes", type=float, help="about the same training time for every backbone")
    ap.add_argument("--image-size", type=int, default=64)
    args = ap.parse_args()
    if args.epochs is None and args.minutes is None:
        args.minutes = 10.0
    n_train = None
    if args.minutes is not None:
        from seedlings.data.index import index_folder

        n_train = round(len(index_folder(args.data).files) * 0.85)  # the default 15 % validation split
    rows = []
    for entry in args.models.split(","):
        name, _, start = entry.partition("+")  # "efficientnet_lite0+imagenet": from the ImageNet weights
        run = args.runs / entry
        if not (run / "model.json").is_file():
            # resuming an interrupted run keeps the epochs planned for it
            epochs = args.epochs or run_config(run).get("epochs")
            if epochs is None:
                epochs, rate = epochs_for(name, args.minutes, args.image_size, n_train)
                print(f"{name}: {rate:.0f} training images/s → {epochs} epochs in about {args.minutes:g} min",
                      flush=True)
            seedlings("train", "--data", str(args.data), "--out", str(run), "--model", name, "--epochs",
                      str(epochs), "--image-size", str(args.image_size), "--seed", "0", "--resume",
                      *(["--pretrained"] if start == "imagenet" else []))
        if not (run / "model" / "model.onnx").is_file():
            seedlings("export", str(run), "--out", str(run / "model"))
        model_file = ModelFile.load(run)
        metrics, training = model_file.metrics, model_file.training
        rows.append({"backbone": entry, "f1_micro": metrics["f1_micro"], "f1_macro": metrics["f1_macro"],
                     "params_m": model_file.get("params", 0) / 1e6, "train_min": training["wall_s"] / 60,
                     "epochs": training["epochs"], "ms": latency_ms(run / "model")})
    args.out.mkdir(parents=True, exist_ok=True)
    seedlings("runs", "compare", str(args.runs), "--out", str(args.out))
    write(rows, args)


def write(rows: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    what = f"{args.epochs} epochs" if args.epochs else f"about {args.minutes:g} minutes of training"
    budget = (f"{what} at {args.image_size} px, same split (seed 0), this machine; from scratch unless "
              "marked +imagenet (fine-tuned from ImageNet weights with the fine-tuning recipe's learning rate)")
    lines = [f"# Backbone leaderboard\n\nBudget: {budget}.\n",
             "| backbone | val micro-F1 | val macro-F1 | params (M) | epochs | train (min) | ONNX ms / image |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["f1_micro"]):
        lines.append(f"| {r['backbone']} | {r['f1_micro']:.4f} | {r['f1_macro']:.4f} | {r['params_m']:.1f} | "
                     f"{r['epochs']} | {r['train_min']:.1f} | {r['ms']:.1f} |")
    (args.out / "leaderboard.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["ms"], r["f1_micro"], s=30 + 4 * r["params_m"])
        ax.annotate(r["backbone"], (r["ms"], r["f1_micro"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("ONNX Runtime ms per image (CPU)")
    ax.set_ylabel("validation micro-F1")
    ax.set_title(f"backbones, {what}, {args.image_size} px (marker size ∝ parameters)")
    ax.grid(alpha=0.3)
    fig.savefig(args.out / "leaderboard-latency.png", dpi=110, bbox_inches="tight")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
