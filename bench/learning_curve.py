"""Learning curve: validation micro-F1 against training images per species, for three starting points.

    python bench/learning_curve.py [--data DIR] [--out DIR] [--shots 5 10 20 50] [--image-size 160]
                                   [--all-runs imagenet=RUN scratch=RUN seedlings=RUN]

Every run is validated on the same images: the default model's split (split seed 0) of the data.
For each count k, k training images per species are drawn (seed 0) from that split's training part,
and three runs start from

* ``imagenet``:  EfficientNet-Lite0 ImageNet weights (``--pretrained``, the fine-tuning recipe);
* ``seedlings``: the default model shipped in the package (``--init``; trained on this data set's
  12 species, so it shows what starting from a related seedlings model gives);
* ``scratch``:   EfficientNet-Lite0 from random weights, same recipe and epochs as ``imagenet``.

All three take the fine-tuning recipe's settings (config.FINETUNE: augmentation, learning rate, EMA,
10 epochs at batch 48 and its floor of 200 optimizer steps), given in a config file, so that only the
starting weights differ: a small set trains with a smaller batch for more epochs (``min_steps``, as
``seedlings train --pretrained`` does for a user), so every run of under ~1,000 images takes about 200
steps. The folders are symbolic links in a temporary directory (no image is copied). The
``all`` column comes from full runs given with ``--all-runs`` (their model.json). Prints a table
and writes learning_curve.png and learning_curve.json into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from seedlings.artifact import ModelFile  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "src" / "seedlings" / "default_model"
INITS = {"imagenet": ["--pretrained"], "seedlings": ["--init", str(DEFAULT_MODEL)],
         "scratch": ["--model", "efficientnet_lite0"]}


def split_folders(data: Path, shots: list[int], work: Path) -> tuple[Path, dict[int, Path]]:
    """The validation folder and one training folder per k, as symlinks into ``data``."""
    from seedlings.data import index_folder, stratified_split

    index = index_folder(data)
    split = stratified_split(index.files, list(index.labels), 0.15, 0)
    val = work / "val"
    _link(data, split.val, val)
    rng = random.Random(0)
    by_class: dict[str, list[str]] = {}
    for name in split.train:
        by_class.setdefault(Path(name).parts[0], []).append(name)
    for names in by_class.values():
        rng.shuffle(names)
    folders = {}
    for k in shots:
        folders[k] = work / f"train-{k}"
        _link(data, [n for names in by_class.values() for n in names[:k]], folders[k])
    return val, folders


def _link(data: Path, names: list[str], out: Path) -> None:
    for name in names:
        dest = out / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            os.symlink(data / name, dest)


def recipe_file(work: Path) -> Path:
    """The fine-tuning recipe (all but its backbone and size) as a config file, for every start alike."""
    import yaml

    from seedlings.config import FINETUNE

    path = work / "recipe.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in FINETUNE.items() if k not in ("model", "image_size")}))
    return path


def schedule(run: Path) -> dict:
    """The batch size and epochs the run used (its config.yaml records them after the step floor)."""
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    return {"batch": cfg["batch_size"], "epochs": cfg["epochs"]}


def train(init: str, folder: Path, val: Path, out: Path, image_size: int) -> dict:
    cmd = [sys.executable, "-m", "seedlings", "train", "--data", str(folder), "--val-data", str(val),
           "--config", str(recipe_file(folder.parent)), "--out", str(out), "--image-size", str(image_size),
           "--seed", "0", *INITS[init]]
    start = time.perf_counter()
    with open(f"{out}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=log)
    return {"f1_micro": ModelFile.load(out).metrics["f1_micro"], **schedule(out),
            "wall_s": round(time.perf_counter() - start, 1)}


def plot(results: dict, shots: list, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for init, row in results.items():
        xs = [k for k in shots if str(k) in row]
        ax.plot([shots.index(k) for k in xs], [row[str(k)]["f1_micro"] for k in xs], marker="o", label=init)
    ax.set_xticks(range(len(shots)), [str(k) for k in shots])
    ax.set_xlabel("training images per species")
    ax.set_ylabel("validation micro-F1 (603 images)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Learning curve by starting point")
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("runs/learning-curve"))
    ap.add_argument("--shots", type=int, nargs="+", default=[5, 10, 20, 50])
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--inits", nargs="+", default=list(INITS), choices=list(INITS))
    ap.add_argument("--report-only", action="store_true",
                    help="train nothing: tabulate and plot the runs already in --out (an interrupted study)")
    ap.add_argument("--all-runs", nargs="*", default=[], metavar="INIT=RUN",
                    help="finished full-data runs (or model folders) for the 'all' column")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: no such folder; pass --data DIR (one sub-folder per species)")
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict = {init: {} for init in args.inits}
    with tempfile.TemporaryDirectory(prefix="seedlings-curve-") as tmp:
        val, folders = split_folders(args.data, args.shots, Path(tmp))
        for k, folder in folders.items():
            for init in args.inits:
                run = args.out / f"{init}-{k}"
                if (run / "model.json").is_file():  # finished earlier: a study resumes where it stopped
                    results[init][str(k)] = r = {"f1_micro": ModelFile.load(run).metrics["f1_micro"],
                                                 **schedule(run), "wall_s": 0.0}
                elif args.report_only:
                    continue
                else:
                    results[init][str(k)] = r = train(init, folder, val, run, args.image_size)
                print(f"{init:10s} {k:>4} per species: micro-F1 {r['f1_micro']:.4f} ({r['epochs']} epochs, batch "
                      f"{r['batch']}, {r['wall_s'] / 60:.1f} min)", flush=True)
    for spec in args.all_runs:
        init, run = spec.split("=", 1)
        results.setdefault(init, {})["all"] = {"f1_micro": ModelFile.load(run).metrics["f1_micro"],
                                               "run": Path(run).name}
    shots = [*args.shots, *(["all"] if args.all_runs else [])]
    (args.out / "learning_curve.json").write_text(json.dumps(results, indent=2))
    plot(results, shots, args.out / "learning_curve.png")
    print("\n| start | " + " | ".join(str(k) for k in shots) + " |")
    print("|---|" + "---|" * len(shots))
    for init, row in results.items():
        print(f"| {init} | " + " | ".join(f"{row[str(k)]['f1_micro']:.3f}" if str(k) in row else "–"
                                         for k in shots) + " |")
    print(f"\nwrote {args.out / 'learning_curve.png'} and learning_curve.json")


if __name__ == "__main__":
    main()
