"""Which feature distance should the "unknown" flag use? Each candidate, on each model, at the same budget.

    python bench/unknown_methods.py MODEL_DIR [MODEL_DIR ...] [--data DIR] [--out FILE.json]

For each exported model folder (its model.onnx, model.json and split.json): the pooled features (the
classifier's input, read from the ONNX graph) of the split's training and validation images and of
generated non-plant images (evaluation/ood.py: 40 each of noise, flat colours, gradients, shapes and
text; seed 0 is the set bench/model_card_figures.py reports, seed 1 a second set no choice was made on).
Every rule flags at most 3 % of the validation images: the max-probability threshold takes 1 % of
them (2 % in the rule shipped before the cosine distance, 3 % when alone) and the distance the rest
(models/novelty.py: budget_threshold). Prints false-reject and false-accept per rule and probe kind.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from seedlings.artifact import ModelFile
from seedlings.data import prepare
from seedlings.data.split import Split
from seedlings.evaluation import ood
from seedlings.evaluation.calibrate import fit_calibration
from seedlings.evaluation.metrics import unknown_threshold
from seedlings.models import novelty
from seedlings.preprocess import normalize
from seedlings.tables import print_table

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"
BUDGET = 0.03


def feature_session(model_dir: Path):
    """An ONNX Runtime session whose outputs are the logits and the classifier's input features."""
    import onnx
    import onnxruntime as ort

    graph = onnx.load(str(model_dir / "model.onnx"))
    head = next(n for n in graph.graph.node if "logits" in n.output)
    graph.graph.output.append(onnx.helper.make_tensor_value_info(head.input[0], onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    session = ort.InferenceSession(graph.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = ["logits", head.input[0]]

    def run(images: np.ndarray, spec) -> tuple[np.ndarray, np.ndarray]:
        feats, logits = [], []
        for i in range(0, len(images), 64):
            lg, f = session.run(names, {session.get_inputs()[0].name: normalize(np.asarray(images[i:i + 64]), spec)})
            logits.append(lg)
            feats.append(f.reshape(len(f), -1))
        return np.concatenate(feats).astype(np.float64), np.concatenate(logits).astype(np.float64)

    return run


def rules(train, val, probes, n_classes: int) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
    """Flags on validation and on each probe set for every candidate rule, all within BUDGET."""
    (tf, ty), (vf, vl, vy) = train, val
    calibration, _ = fit_calibration(vl, vy)
    prob = {"val": calibration.probabilities(vl).max(1)}
    prob.update({k: calibration.probabilities(lg).max(1) for k, (_, lg) in probes.items()})
    centres, whiten = novelty.fit(tf, ty, n_classes)
    directions = novelty.fit_directions(tf, ty, n_classes)
    maha = {"val": novelty.distances(centres, whiten, vf)}
    maha.update({k: novelty.distances(centres, whiten, f) for k, (f, _) in probes.items()})
    cos = {"val": novelty.cosine_distances(directions, vf)}
    cos.update({k: novelty.cosine_distances(directions, f) for k, (f, _) in probes.items()})
    scale = [np.quantile(maha["val"], novelty.SCALE_QUANTILE), np.quantile(cos["val"], novelty.SCALE_QUANTILE)]
    both = {k: np.maximum(maha[k] / scale[0], cos[k] / scale[1]) for k in maha}

    def rule(prob_share: float, distance: dict | None):
        thr = unknown_threshold(prob["val"], prob_share)
        unsure = {k: p < thr for k, p in prob.items()}
        if distance is None:
            return unsure
        cut = novelty.budget_threshold(distance["val"], unsure["val"], BUDGET)
        return {k: unsure[k] | (distance[k] > cut) for k in unsure}

    return {"max probability alone (3 %)": rule(BUDGET, None),
            "max probability 2 % + Mahalanobis (shipped before)": rule(0.02, maha),
            "max probability 1 % + Mahalanobis": rule(0.01, maha),
            "max probability 1 % + cosine": rule(0.01, cos),
            "max probability 1 % + both (shipped now)": rule(0.01, both)}


def measure(model_dir: Path, data_dir: Path) -> dict:
    meta = ModelFile.load(model_dir)
    spec = meta.preprocess
    data = prepare(data_dir, spec, progress=False)
    split = Split.load(model_dir / "split.json")
    tr, va = data.subset(split.train), data.subset(split.val)
    run = feature_session(model_dir)
    tf, _ = run(data.images[tr], spec)
    vf, vl = run(data.images[va], spec)
    probes = {}
    for seed in (0, 1):
        for kind, images in ood.generate(n_per_kind=40, size=spec.image_size, seed=seed).items():
            probes[f"{kind}@{seed}"] = run(images, spec)
    flags = rules((tf, data.labels[tr]), (vf, vl, data.labels[va]), probes, len(meta.classes))
    out = {}
    for name, f in flags.items():
        row = {"false_reject": float(f["val"].mean())}
        for seed in (0, 1):
            accepted = [~f[f"{k}@{seed}"] for k in ood.KINDS]
            row[f"false_accept_seed{seed}"] = float(np.concatenate(accepted).mean())
            row[f"by_kind_seed{seed}"] = {k: float(a.mean()) for k, a in zip(ood.KINDS, accepted)}
        out[name] = row
    return {"model": meta.name, "backbone": meta.backbone, "image_size": spec.image_size,
            "features": int(tf.shape[1]), "rules": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = []
    for model_dir in args.models:
        results.append(measure(model_dir, args.data))
        r = results[-1]
        rows = [[name, f"{v['false_reject']:.1%}", f"{v['false_accept_seed0']:.1%}", f"{v['false_accept_seed1']:.1%}",
                 " ".join(f"{k} {a:.0%}" for k, a in v["by_kind_seed0"].items())]
                for name, v in r["rules"].items()]
        print_table(f"{model_dir} ({r['backbone']}, {r['image_size']} px, {r['features']} features)",
                    ["rule", "false-reject", "false-accept (seed 0)", "(seed 1)", "accepted by kind (seed 0)"],
                    rows)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
