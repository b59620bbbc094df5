"""Backbone leaderboard: several backbones trained on the same split at an equal, stated budget.

    python bench/leaderboard.py [--data DIR] [--epochs 3] [--image-size 96] [--models a,b,c] [--out docs/leaderboard]

Each backbone is trained by `seedlings train` (same seed, so the same stratified split), exported to
ONNX, and timed on single images with ONNX Runtime. `seedlings runs compare` makes the table; this
script adds inference latency and writes leaderboard.md + leaderboard.png into --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"
DEFAULT_MODELS = "resnet10t,mobilenetv2,resnet50,xception"


def seedlings(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "seedlings", *args], check=True)


def latency_ms(model_dir: Path) -> float:
    from seedlings.inference import load_model

    model = load_model(model_dir)
    image = np.random.default_rng(0).integers(0, 256, (1, model.spec.image_size, model.spec.image_size, 3),
                                              dtype=np.uint8)
    times = []
    for _ in range(50):
        t = time.perf_counter()
        model.probabilities(image)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--runs", type=Path, default=Path("runs/leaderboard"))
    ap.add_argument("--out", type=Path, default=Path("docs/leaderboard"))
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=96)
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        run = args.runs / name
        if not (run / "model.json").is_file():
            seedlings("train", "--data", str(args.data), "--out", str(run), "--model", name, "--epochs",
                      str(args.epochs), "--image-size", str(args.image_size), "--seed", "0", "--resume")
        if not (run / "model" / "model.onnx").is_file():
            seedlings("export", str(run), "--out", str(run / "model"))
        meta = json.loads((run / "model.json").read_text())
        rows.append({"backbone": name, "f1_micro": meta["metrics"]["f1_micro"], "f1_macro": meta["metrics"]["f1_macro"],
                     "params_m": meta.get("params", 0) / 1e6, "train_min": meta["training"]["wall_s"] / 60,
                     "ms": latency_ms(run / "model")})
    args.out.mkdir(parents=True, exist_ok=True)
    seedlings("runs", "compare", str(args.runs), "--out", str(args.out))
    write(rows, args)


def write(rows: list[dict], args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = f"{args.epochs} epochs at {args.image_size} px, from scratch, same split (seed 0), this machine"
    lines = [f"# Backbone leaderboard\n\nBudget: {budget}.\n",
             "| backbone | val micro-F1 | val macro-F1 | params (M) | train (min) | ONNX ms / image |",
             "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: -r["f1_micro"]):
        lines.append(f"| {r['backbone']} | {r['f1_micro']:.4f} | {r['f1_macro']:.4f} | {r['params_m']:.1f} | "
                     f"{r['train_min']:.1f} | {r['ms']:.1f} |")
    (args.out / "leaderboard.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ax.scatter(r["ms"], r["f1_micro"], s=30 + 4 * r["params_m"])
        ax.annotate(r["backbone"], (r["ms"], r["f1_micro"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("ONNX Runtime ms per image (CPU)")
    ax.set_ylabel("validation micro-F1")
    ax.set_title(f"backbones at {args.epochs} epochs, {args.image_size} px (marker size ∝ parameters)")
    ax.grid(alpha=0.3)
    fig.savefig(args.out / "leaderboard-latency.png", dpi=110, bbox_inches="tight")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
