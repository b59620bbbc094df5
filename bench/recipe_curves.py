"""Validation micro-F1 per epoch of several runs on one split, against a reference model's score.

    python bench/recipe_curves.py LABEL=RUN [LABEL=RUN ...] [--reference MODEL_DIR] [--band 0.017]
                                  [--out docs/model-card/transfer_recipes.png]

RUN: run folders trained on the same validation split (their metrics.jsonl: one line per epoch).
MODEL_DIR: the model to compare with (default: the packaged default model); its validation
micro-F1 is drawn as a line, with a band of ± --band around it: the differences the split cannot
resolve (see `bench/shared_errors.py`, which prints the paired McNemar test of two models). Prints
each run's best and last epoch, and writes the PNG.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seedlings.artifact import ModelFile
from seedlings.tables import print_table

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src" / "seedlings" / "default_model"


def read_curve(run: Path) -> list[float]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"{run}: no metrics.jsonl; give run folders (seedlings train --out), not exported models")
    return [json.loads(line)["val_f1_micro"] for line in path.read_text().splitlines() if line.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="LABEL=RUN")
    ap.add_argument("--reference", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--band", type=float, default=0.017, help="half-width of the band around the reference")
    ap.add_argument("--out", type=Path, default=Path("docs/model-card/transfer_recipes.png"))
    args = ap.parse_args()

    curves = {}
    for entry in args.runs:
        label, sep, run = entry.partition("=")
        if not sep:
            sys.exit(f"{entry}: write LABEL=RUN_FOLDER")
        curves[label] = read_curve(Path(run))
    reference = ModelFile.load(args.reference)
    if reference.metrics.get("split") != "validation":
        sys.exit(f"--reference {args.reference}: its micro-F1 is not a validation-split score (split "
                 f"{reference.metrics.get('split')!r}: a model trained on every image reports its recipe's out-of-fold "
                 "score); give a model validated on the runs' split, or compare recipes with bench/oof_compare.py")
    ref = reference.metrics["f1_micro"]
    rows = [[label, f"{max(c):.4f} ({c.index(max(c)) + 1})", f"{c[-1]:.4f}", f"{(max(c) - ref) * 100:+.2f}"]
            for label, c in curves.items()]
    print_table(f"validation micro-F1 against {reference.name} ({ref:.4f})",
                ["run", "best (epoch)", "last", "best − reference, points"], rows)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    longest = max(len(c) for c in curves.values())
    ax.axhspan(ref - args.band, ref + args.band, color="0.9", label=f"± {args.band * 100:.1f} points")
    ax.axhline(ref, color="k", linestyle="--", label=f"{reference.name} {ref:.4f}")
    for label, c in curves.items():
        ax.plot(range(1, len(c) + 1), c, marker="o", markersize=3, label=label)
    low = min(min(c[len(c) // 3:]) for c in curves.values())  # the first epochs are far below: zoom on the rest
    ax.set_ylim(min(low, ref - args.band) - 0.005, max(ref + args.band, max(max(c) for c in curves.values())) + 0.005)
    ax.set_xlim(0.5, longest + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation micro-F1")
    ax.set_title("fine-tuning recipes, one validation split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
