"""Which part of a run's "not a seedling" rule lets generated probes through: max probability, Mahalanobis or cosine.

    python bench/probe_distances.py RUN_DIR [RUN_DIR ...] [--per-kind 40] [--seeds 0 1]

RUN_DIR: finished run folders (weights and novelty file; a fold run or a model trained on every image). For each
run and probe seed (`evaluation/ood.generate`, the sets `bench/model_card_figures.py` scores) it prints the
false-accept of the whole rule, the share of probes each signal flags on its own, and, for the probes let through,
each distance in units of the run's threshold (1 = flagged): the distance nearer to 1 is the one that almost caught
them. Session 15 used it to find why the model trained on every image let text through (model card).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--per-kind", type=int, default=40, help="probes of each kind per seed (default 40, as the card)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
