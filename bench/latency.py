"""Single-image latency of exported models, side by side in one run: the issue's "fp32 latency ≤ 10 ms median".

    python bench/latency.py MODEL_DIR [MODEL_DIR ...] [--precision fp32] [--rounds 6] [--n 100] [--threads N]

Each model (an exported folder: model.onnx + model.json) scores one image at a time, as `seedlings serve` does for a
lone request, through `Model.probabilities` (preprocessed input, ONNX Runtime, no decoding). The models take turns:
R rounds, each a warm-up of 10 calls and N timed calls per model, so a busy spell on the machine hits all of them.
Prints the CPU (its flags decide the speed), each model's median over the rounds of the per-round medians with
the rounds themselves, and each model's ratio to the first. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_bench import cpu_line  # noqa: E402

from seedlings.api import load_model  # noqa: E402


def round_medians(models: dict, images: dict, rounds: int, n: int) -> dict[str, list[float]]:
    """Per model, the median milliseconds of one-image calls in each round (models interleaved)."""
    out: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            out[name].append(latency_ms(model, images[name], n))
    return out


def latency_ms(model, image: np.ndarray, n: int = 200, warmup: int = 10) -> float:
    """Median milliseconds of ``n`` one-image calls of ``model.probabilities``, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        model.probabilities(image[None])
    times = []
    for _ in range(n):
        started = time.perf_counter()
        model.probabilities(image[None])
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", type=Path, nargs="+")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "int8"])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--n", type=int, default=100, help="timed calls per model and round")
    ap.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads (default: its own)")
    args = ap.parse_args()
    models = {}
    for i, path in enumerate(args.models, 1):
        model = load_model(path, precision=args.precision, threads=args.threads)
        models[f"{i}. {path} ({model.spec.image_size} px)"] = model
    rng = np.random.default_rng(0)  # a photo-sized uint8 image at each model's input size
    images = {name: rng.integers(0, 256, (m.spec.image_size, m.spec.image_size, 3), dtype=np.uint8)
              for name, m in models.items()}
    result = round_medians(models, images, args.rounds, args.n)
    print(cpu_line())
    first = float(np.median(next(iter(result.values()))))
    for name, values in result.items():
        median = float(np.median(values))
        print(f"{name}: {median:.2f} ms median, {args.precision}, {median / first:.2f}× the first "
              f"(rounds {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
