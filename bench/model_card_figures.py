"""Every figure of docs/MODEL_CARD.md, measured on the model folder and its validation split.

    python bench/model_card_figures.py [--model MODEL_DIR] [--data DIR] [--out docs/model-card] [--folds CV]

Validation micro-F1 with and without test-time augmentation, fp32 vs int8, calibration,
unknown-flag rates on generated out-of-distribution images, single-image ONNX latency.
Writes figures.json, confusion_matrix.png and reliability.png into --out and prints a summary.

A model trained on every image (``train --val-fraction 0 --calibrate-from CV``) has no validation split: pass
``--folds CV``. Its accuracy, confusion matrix and reliability are then the out-of-fold ones of those folds (the
probabilities under the final model's temperature), its false-reject on real seedlings the folds' (each on the
images it held out) beside its own rate on its training photos (a lower bound: it trained on them); the
generated probes, int8 agreement, latency and size are measured on the model itself, and the probes also on each
fold whose weights are kept (their rules were fitted on photos they held out; the final model's is transferred).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from seedlings.api import load_model
from seedlings.evaluation import ood
from seedlings.evaluation.plots import plot_confusion, plot_reliability
from seedlings.evaluation.report import evaluate, public
from seedlings.fileio import atomic_write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latency import latency_ms  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "plant-seedlings" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("docs/model-card"))
    ap.add_argument("--folds", type=Path, help="for a model trained on every image: its --calibrate-from folder")
    args = ap.parse_args()
    model = load_model(args.model, threads=None)
    if model.file.metrics.get("split") == "out-of-fold":
        if args.folds is None:
            ap.error(f"{model.dir} trained on every image (no validation split): add --folds CV, the fold runs it "
                     "was calibrated from (train --calibrate-from CV)")
        return final_figures(model, args)
    out: dict = {"model": {"name": model.name, "version": model.version}}
    plain = evaluate(model, args.data, progress=False)
    tta = evaluate(model, args.data, tta=True, progress=False)
    out["validation"] = public(plain)
    out["validation_tta"] = {k: tta[k] for k in ("accuracy", "f1_micro", "f1_macro", "n", "ece", "unknown_rate")}
    out["validation_tta"]["confusion_matrix"] = tta["confusion_matrix"]
    out["calibration"] = model.file.calibration.to_dict()
    try:
        int8 = load_model(args.model, precision="int8")
        q = evaluate(int8, args.data, progress=False)
        out["validation_int8"] = {k: q[k] for k in ("accuracy", "f1_micro", "f1_macro", "n")}
        out["latency_ms_int8"] = latency_ms(int8, _one_image(model, args.data))
    except Exception as exc:  # int8 is optional
        out["validation_int8"] = {"error": str(exc)}
    val_images = _val_images(model, args.data, plain)
    probes = ood.generate(n_per_kind=40, size=model.spec.image_size)
    out["unknown"] = ood.unknown_rates(model, val_images, probes)
    out["unknown_tta"] = ood.unknown_rates(model, val_images, probes, tta=True)
    out["latency_ms_fp32"] = latency_ms(model, _one_image(model, args.data))
    out["files_bytes"] = {k: v.bytes for k, v in model.file.files.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "figures.json", portable(out))
    plot_confusion(plain["confusion_matrix"], plain["classes"], args.out / "confusion_matrix.png",
                   "validation confusion matrix")
    plot_reliability(plain["_probs"], plain["_labels"], args.out / "reliability.png")
    _print(out)


def final_figures(model, args) -> None:
    """The figures of a model trained on every image: out-of-fold ones from its folds, the rest measured on it."""
    from seedlings.data import prepare
    from seedlings.evaluation.metrics import expected_calibration_error, softmax
    from seedlings.training.final import read_evidence
    from seedlings.training.folds import fold_dirs

    folds = fold_dirs(args.folds)
    files = json.loads((Path(model.dir) / "split.json").read_text())["train"]  # it trained on every image
    evidence = read_evidence(args.folds, model.classes, files, model.file.backbone, model.spec.image_size)
    if abs(evidence.calibration.temperature - model.file.calibration.temperature) > 1e-9:
        raise SystemExit(f"--folds {args.folds}: not the folds {model.dir} was calibrated from (their temperature "
                         f"{evidence.calibration.temperature:.6f}, its {model.file.calibration.temperature:.6f})")
    records = [json.loads((run / "model.json").read_text()) for run in folds]
    logits, labels, per_fold = evidence.logits, evidence.labels, evidence.per_fold
    calibrated = softmax(logits, model.file.calibration.temperature)
    held_out = [r["unknown"] for r in records]
    n_val = np.asarray([f["n"] for f in per_fold])
    out: dict = {"model": {"name": model.name, "version": model.version}, "folds": len(folds),
                 "out_of_fold": {**evidence.report, "per_fold": per_fold,
                                 "ece_before": expected_calibration_error(softmax(logits, 1.0), labels),
                                 "ece_after": expected_calibration_error(calibrated, labels)},
                 "calibration": model.file.calibration.to_dict()}
    out["false_reject_folds"] = {  # each fold's rule on the images it held out, weighted by their number
        "both": float(np.average([u["false_reject_validation_total"] for u in held_out], weights=n_val)),
        "max_probability": float(np.average([u["false_reject_validation"] for u in held_out], weights=n_val)),
        "distance": float(np.average([u["distance_false_reject_validation"] for u in held_out], weights=n_val)),
        "max_probability_final_rule": float((calibrated.max(1) < model.file.unknown.threshold).mean())}
    data = prepare(args.data, model.spec.image_size, model.spec.interpolation, progress=False)
    photos = np.asarray(data.images[np.arange(len(data.files))])
    probes = {seed: ood.generate(n_per_kind=40, size=model.spec.image_size, seed=seed) for seed in (0, 1)}
    out["unknown"] = {f"probes_seed{seed}": ood.unknown_rates(model, photos, p) for seed, p in probes.items()}
    out["unknown_folds"] = _fold_probes(folds, probes)
    try:
        int8 = load_model(args.model, precision="int8")
        agree = int8.probabilities(photos).argmax(1) == model.probabilities(photos).argmax(1)
        out["int8_top1_agreement"] = {"n": int(agree.size), "agreement": float(agree.mean())}
        out["latency_ms_int8"] = latency_ms(int8, photos[0])
    except Exception as exc:  # int8 is optional
        out["int8_top1_agreement"] = {"error": str(exc)}
    out["latency_ms_fp32"] = latency_ms(model, photos[0])
    out["files_bytes"] = {k: v.bytes for k, v in model.file.files.items()}
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "figures.json", portable(out))
    plot_confusion(evidence.report["confusion_matrix"], model.classes, args.out / "confusion_matrix.png",
                   f"out-of-fold confusion matrix ({len(folds)} folds of the recipe)")
    plot_reliability(calibrated, labels, args.out / "reliability.png")
    _print_final(out)


def _fold_probes(folds, probes: dict) -> dict:
    """Each fold model's false-accept on the same probes (folds whose weights are kept): what a rule fitted on held-out
    photos gives, beside the final model's transferred one."""
    from seedlings.artifact import WEIGHTS

    rates = {}
    for run in folds:
        if (run / WEIGHTS).is_file():
            fold = load_model(run)
            rates[run.name] = {f"probes_seed{seed}": ood.false_accept(fold, p) for seed, p in probes.items()}
    return rates


def _print_final(out: dict) -> None:
    o = out["out_of_fold"]
    print(f"out-of-fold ({out['folds']} folds) n = {o['n']}: micro-F1 {o['f1_micro']:.4f}, macro-F1 "
          f"{o['f1_macro']:.4f}; per fold " + ", ".join(f"{f['f1_micro']:.4f}" for f in o["per_fold"]))
    c = out["calibration"]
    print(f"calibration: T = {c['temperature']:.3f}; out-of-fold ECE {o['ece_before']:.4f} → {o['ece_after']:.4f}")
    f = out["false_reject_folds"]
    print(f"false-reject on real seedlings, the folds on their held-out images: both {f['both']:.1%} (max "
          f"probability {f['max_probability']:.1%}, distance {f['distance']:.1%}); the final max-probability "
          f"threshold on the out-of-fold probabilities {f['max_probability_final_rule']:.1%}")
    for key, u in out["unknown"].items():
        _print_unknown(f"unknown, {key}", u, "its own training photos, a lower bound")
    for fold, rates in out["unknown_folds"].items():
        print(f"{fold} (its own rule, fitted on photos it held out): false-accept "
              + ", ".join(f"{k} {r:.1%}" for k, r in rates.items()))
    q = out["int8_top1_agreement"]
    if "agreement" in q:
        print(f"int8: top-1 agreement with fp32 {q['agreement']:.2%} on {q['n']} photos")
    print(f"single-image latency (ONNX Runtime, median): fp32 {out['latency_ms_fp32']:.1f} ms"
          + (f", int8 {out['latency_ms_int8']:.1f} ms" if "latency_ms_int8" in out else ""))
    print(f"files: {out['files_bytes']} = {sum(out['files_bytes'].values()) / 1e6:.1f} MB")


def portable(figures: dict) -> dict:
    """The figures with this machine's paths made relative to the repository (``../shared/…`` for the data)."""
    text = json.dumps(figures).replace(f"{REPO}/", "").replace(f"{REPO.parent}/", "../")
    return json.loads(text)


def _val_images(model, data_dir, report) -> np.ndarray:
    from seedlings.data import prepare

    data = prepare(data_dir, model.spec.image_size, progress=False)
    return np.asarray(data.images[data.subset(report["_files"])])


def _one_image(model, data_dir) -> np.ndarray:
    first = sorted(Path(data_dir).rglob("*.png"))[0]
    return model.prepare(first)


def _print_unknown(key: str, u: dict, real: str = "validation") -> None:
    kinds = ", ".join(f"{k} {r:.0%}" for k, r in u["false_accept"].items())
    print(f"{key}: false-reject ({real}) {u['false_reject_validation']:.1%}; "
          f"false-accept {u['false_accept_all']:.1%} ({kinds})")
    signals = [("max probability", "max_probability", f"< {u['threshold']:.3f}")]
    if u.get("distance_threshold") is not None:
        signals.append(("feature distance", "distance", f"> {u['distance_threshold']:.4g}"))
    for label, suffix, rule in signals:
        acc = u[f"false_accept_{suffix}"]
        print(f"  {label} alone ({rule}): false-reject {u[f'false_reject_validation_{suffix}']:.1%}; false-accept "
              + ", ".join(f"{k} {r:.0%}" for k, r in acc.items()))


def _print(out: dict) -> None:
    v, t = out["validation"], out["validation_tta"]
    print(f"validation n = {v['n']}: micro-F1 {v['f1_micro']:.4f}, macro-F1 {v['f1_macro']:.4f}; "
          f"with TTA micro-F1 {t['f1_micro']:.4f}, macro-F1 {t['f1_macro']:.4f}")
    q = out["validation_int8"]
    if "f1_micro" in q:
        print(f"int8: micro-F1 {q['f1_micro']:.4f} ({(q['f1_micro'] - v['f1_micro']) * 100:+.2f} points)")
    c = out["calibration"] or {}
    print(f"calibration: T = {c.get('temperature', 1):.3f}, ECE {c.get('ece_before', 0):.4f} → "
          f"{c.get('ece_after', 0):.4f}")
    for key in ("unknown", "unknown_tta"):
        _print_unknown(key, out[key])
    print(f"single-image latency (ONNX Runtime, median): fp32 {out['latency_ms_fp32']:.1f} ms"
          + (f", int8 {out['latency_ms_int8']:.1f} ms" if "latency_ms_int8" in out else ""))
    print(f"files: {out['files_bytes']} = {sum(out['files_bytes'].values()) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
