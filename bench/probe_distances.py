"""Which part of a run's "not a seedling" rule lets generated probes through: max probability, Mahalanobis or cosine.

    python bench/probe_distances.py RUN_DIR [RUN_DIR ...] [--per-kind 40] [--seeds 0 1] [--knn K … --data DIR]

RUN_DIR: finished run folders (weights and novelty file; a fold run or a model trained on every image). For each
run and probe seed (`evaluation/ood.generate`, the sets `bench/model_card_figures.py` scores) it prints the
false-accept of the whole rule, the share of probes each signal flags on its own, and, for the probes let through,
each distance in units of the run's threshold (1 = flagged): the distance nearer to 1 is the one that almost caught
them. Session 15 used it to find why the model trained on every image let text through (model card).

``--knn K``: for fold runs (a split with held-out photos, read from ``--data``), a candidate detector beside the
run's own: the cosine distance (signed-√ features) to the K nearest *training photos* instead of the class mean
directions, its threshold set as the run's is (the 3 % false-reject budget on the held-out photos, what the
max-probability rule leaves of it). Prints its false-accept per probe seed, which probes it lets through and the
training photos nearest to them.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import numpy as np

from seedlings.artifact import ModelFile
from seedlings.evaluation import ood
from seedlings.models import novelty
from seedlings.models.backend import load_network


def components(run: Path, probes: dict[str, np.ndarray]) -> dict:
    """Per probe: kind, whether the rule lets it through, max-probability flag, and both distances divided by the
    run's scale and distance threshold (a distance above 1 flags the probe)."""
    model_file = ModelFile.load(run)
    model, with_distance = load_network(run, model_file)
    if with_distance is None or not getattr(with_distance, "cosine", False):
        raise SystemExit(f"{run}: no two-distance 'not a seedling' detector (novelty file with directions)")
    images = np.concatenate(list(probes.values()))
    kinds = np.concatenate([[k] * len(v) for k, v in probes.items()])
    feats, logits = novelty.features_logits(model, images, np.arange(len(images)), model_file.preprocess,
                                            len(model_file.classes))
    rule = model_file.unknown
    probs = model_file.calibration.probabilities(logits)
    centres, whiten, directions = (getattr(with_distance, n).numpy().astype(np.float64)
                                   for n in ("centres", "whiten", "directions"))
    scales = with_distance.scales.numpy().astype(np.float64)
    maha = novelty.distances(centres, whiten, feats) / scales[0]
    cos = novelty.cosine_distances(directions, feats) / scales[1]
    distance = np.maximum(maha, cos)  # what the graph's distance output is (novelty.combined), kept in its two parts
    return {"kinds": kinds, "accepted": ~rule.flags(probs, distance), "unsure": rule.signals(probs, distance)[0],
            "maha": maha / rule.distance_threshold, "cos": cos / rule.distance_threshold, "scales": scales,
            "threshold": rule.distance_threshold}


def knn_distances(bank: np.ndarray, feats: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """1 − the mean cosine between each image's signed-√ features and its ``k`` nearest rows of ``bank`` (already
    signed-√, unit rows), and the row of ``bank`` nearest to each image."""
    sims = novelty.signed_root(feats) @ bank.T
    k = min(k, bank.shape[0])
    return 1 - np.partition(sims, -k, axis=1)[:, -k:].mean(1), sims.argmax(1)


@functools.lru_cache(maxsize=1)
def _photo_features(run: Path, data_dir: Path):
    """A fold run's network, its training photos' signed-√ features, its held-out photos' features and logits."""
    from seedlings.data.cache import prepare

    model_file = ModelFile.load(run)
    split = json.loads((run / "split.json").read_text())
    if not split.get("val"):
        raise SystemExit(f"{run}: no held-out photos in its split.json (a model on every image); --knn needs a fold")
    model = load_network(run, model_file)[0]
    data = prepare(data_dir, model_file.preprocess, progress=False)
    where = {name: i for i, name in enumerate(data.files)}
    missing = [n for n in split["train"] + split["val"] if n not in where]
    if missing:
        raise SystemExit(f"--data {data_dir}: not the photos {run} trained on ({len(missing)} missing, e.g. "
                         f"{missing[0]})")
    spec, n_classes = model_file.preprocess, len(model_file.classes)
    bank = novelty.signed_root(novelty.features(model, data.images, np.asarray([where[n] for n in split["train"]]),
                                                spec))
    held, held_logits = novelty.features_logits(model, data.images, np.asarray([where[n] for n in split["val"]]),
                                                spec, n_classes)
    return model_file, model, bank, held, held_logits, split["train"]


def knn_rule(run: Path, data_dir: Path, probes: dict[str, np.ndarray], k: int) -> dict:
    """The run's max-probability rule with the distance part replaced by the ``k``-nearest-training-photo distance,
    thresholded on the run's held-out photos with the same budget; what it lets through of ``probes``."""
    model_file, model, bank, held, held_logits, names = _photo_features(run, data_dir)
    rule, calibration = model_file.unknown, model_file.calibration
    held_d = knn_distances(bank, held, k)[0]
    threshold = novelty.budget_threshold(held_d, rule.signals(calibration.probabilities(held_logits))[0])
    images = np.concatenate(list(probes.values()))
    feats, logits = novelty.features_logits(model, images, np.arange(len(images)), model_file.preprocess,
                                            len(model_file.classes))
    d, nearest = knn_distances(bank, feats, k)
    unsure = rule.signals(calibration.probabilities(logits))[0]
    kinds = np.concatenate([[kind] * len(v) for kind, v in probes.items()])
    return {"kinds": kinds, "accepted": ~(unsure | (d > threshold)), "distance": d / threshold, "threshold": threshold,
            "nearest": np.asarray(names)[nearest]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--per-kind", type=int, default=40, help="probes of each kind per seed (default 40, as the card)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--knn", type=int, nargs="+", default=[], metavar="K",
                    help="also measure a K-nearest-training-photo distance in place of the run's (fold runs)")
    ap.add_argument("--data", type=Path, help="the photos the runs trained on (needed with --knn)")
    args = ap.parse_args()
    if args.knn and args.data is None:
        ap.error("--knn needs --data DIR, the folder the runs trained on")
    print(f"{'run':<28} {'seed':>4} {'false-accept':>12} {'max-prob flags':>14} {'Mahalanobis':>11} {'cosine':>7}  "
          "let through: kind (Mahalanobis, cosine) in threshold units")
    for run in args.runs:
        size = ModelFile.load(run).preprocess.image_size
        for seed in args.seeds:
            c = components(run, ood.generate(args.per_kind, size=size, seed=seed))
            through = ", ".join(f"{k} ({m:.2f}, {s:.2f})" for k, m, s in
                                zip(c["kinds"][c["accepted"]], c["maha"][c["accepted"]], c["cos"][c["accepted"]]))
            name = f"{run.parent.name}/{run.name}"[-28:]
            print(f"{name:<28} {seed:>4} {c['accepted'].mean():>12.1%} {c['unsure'].mean():>14.0%} "
                  f"{(c['maha'] > 1).mean():>11.0%} {(c['cos'] > 1).mean():>7.0%}  {through or '-'}", flush=True)
        print(f"{'':<28} scales: Mahalanobis {c['scales'][0]:.0f}, cosine {c['scales'][1]:.3f}; distance threshold "
              f"{c['threshold']:.3f}")
        for k in args.knn:
            for seed in args.seeds:
                c = knn_rule(run, args.data, ood.generate(args.per_kind, size=size, seed=seed), k)
                kinds, counts = np.unique(c["kinds"][c["accepted"]], return_counts=True)
                through = ", ".join(f"{n} {kind}" for kind, n in zip(kinds, counts))
                photos, near = np.unique(c["nearest"][c["accepted"]], return_counts=True)
                if len(photos):
                    through += "; nearest training photo: " + ", ".join(
                        f"{photos[i]} ({near[i]})" for i in np.argsort(-near)[:3])
                print(f"{'':<28} {seed:>4} {c['accepted'].mean():>12.1%}  with the {k}-nearest-photo distance "
                      f"(threshold {c['threshold']:.3f}) in place of the run's: {through or '-'}", flush=True)


if __name__ == "__main__":
    main()
