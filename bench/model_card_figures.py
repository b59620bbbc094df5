"""Every figure of docs/MODEL_CARD.md, measured on the model folder and its validation split.

    python bench/model_card_figures.py [--model MODEL_DIR] [--data DIR] [--out docs/model-card]

Validation micro-F1 with and without test-time augmentation, fp32 vs int8, calibration,
unknown-flag rates on generated out-of-distribution images, single-image ONNX latency.
Writes figures.json, confusion_matrix.png and reliability.png into --out and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from seedlings.api import load_model
from seedlings.evaluation import ood
from seedlings.evaluation.plots import plot_confusion, plot_reliability
from seedlings.evaluation.report import evaluate, public
from seedlings.fileio import atomic_write_json

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "plant-seedlings" / "train"


def latency_ms(model, image: np.ndarray, n: int = 200) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        model.probabilities(image[None])
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out", type=Path, default=Path("docs/model-card"))
    args = ap.parse_args()
    model = load_model(args.model, threads=None)
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


def _print_unknown(key: str, u: dict) -> None:
    kinds = ", ".join(f"{k} {r:.0%}" for k, r in u["false_accept"].items())
    print(f"{key}: false-reject (validation) {u['false_reject_validation']:.1%}; "
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
