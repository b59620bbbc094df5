"""Batch prediction speed: today's single-process `seedlings predict`, the Parquet path with 0, 1 and 2 decoding
workers, and the HTTP service, side by side on the same photos and model, in one run, with the CPU printed.

    python bench/predict_bench.py [--data DIR] [--model MODEL_DIR] [--images N] [--rounds R]

Each `predict` configuration runs as a fresh `python -m seedlings predict` process (start-up, model load and
worker spawn included, as a user sees it), on the first N photos of --data (symbolic links in a temporary
folder, never copies). The service (`seedlings serve`, its defaults: micro-batching, 2 threads) is started
fresh too and sent the same N photos, 16 requests in flight on keep-alive connections (bench/serve_bench.py's
low-CPU client): its row counts from the start of the process to the last answer, like the others; the line
under it gives the answers alone (the service already warm). R rounds interleaved; the best round is kept.
Figures are printed, never asserted: they depend on the machine and what else runs on it.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def cpu_line() -> str:
    flags = set()
    model = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    names = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16")
    wanted = [f for f in names if f in flags]
    return f"CPU: {model}, {os.cpu_count()} CPUs, {' '.join(wanted) or 'no AVX2'}; load {os.getloadavg()[0]:.2f}"


def link_photos(data: Path, n: int, out: Path) -> int:
    photos = sorted(p for p in data.rglob("*.png"))[:n]
    for p in photos:
        dest = out / p.relative_to(data)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(p)
    return len(photos)


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def serve_once(model_dir: Path | None, photos: list[bytes], concurrency: int = 16) -> tuple[float, float]:
    """(seconds from starting `seedlings serve` to its last answer, seconds of the answers alone)."""
    from serve_bench import Server, load

    from seedlings.inference import resolve_model_dir

    started = time.perf_counter()
    server = Server(resolve_model_dir(model_dir))
    try:
        answering = time.perf_counter()
        r = load(server.url, photos, len(photos), concurrency)
        if r["errors"]:
            raise SystemExit(f"the service answered {r['errors']} of {len(photos)} requests with an error")
        return time.perf_counter() - started, time.perf_counter() - answering
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", help="model folder (default: the packaged model)")
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    model = ["--model", args.model] if args.model else []
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        photos = Path(tmp) / "photos"
        n = link_photos(args.data, args.images, photos)
        base = [sys.executable, "-m", "seedlings", "predict", str(photos), *model]
        configs = {"predict (today: one process, table)": base + ["--format", "json"],
                   **{f"predict --out, {w} decoding worker(s)": base + ["--out", f"{tmp}/out-{w}", "--workers", str(w)]
                      for w in (0, 1, 2)}}
        served = "serve, 16 in flight (HTTP, multipart)"
        best = {name: float("inf") for name in [*configs, served]}
        answers = float("inf")
        photo_bytes = [p.read_bytes() for p in sorted(photos.rglob("*.png"))]
        for _ in range(args.rounds):
            for name, cmd in configs.items():
                for leftover in Path(tmp).glob("out-*"):  # every round predicts everything again
                    subprocess.run(["rm", "-rf", str(leftover)], check=True)
                best[name] = min(best[name], timed(cmd))
            total, alone = serve_once(args.model, photo_bytes)
            best[served], answers = min(best[served], total), min(answers, alone)
        print(f"{n} photos from {args.data}, best of {args.rounds} rounds, a fresh process each "
              "(start-up and model load included):")
        today = best[next(iter(best))]
        for name, seconds in best.items():
            print(f"  {name:<40} {seconds:6.1f} s  {n / seconds:6.1f} images/s  {today / seconds:4.2f}× today")
        print(f"  {'  of which the answers, service warm':<40} {answers:6.1f} s  {n / answers:6.1f} images/s  "
              "(no start-up: not comparable with × today)")
    print(cpu_line().split(";")[1].strip())


if __name__ == "__main__":
    main()
