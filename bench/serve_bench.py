"""Serving benchmark: model-only throughput and end-to-end HTTP figures, printed side by side.

    python bench/serve_bench.py --run RUN_DIR [--model MODEL_DIR] [--quick]

* model only: PyTorch eager (needs ``--run``) vs ONNX Runtime fp32 vs int8, images/s at batch 1 and 16;
* int8 vs fp32 validation micro-F1 (needs ``--run`` whose data folder is present);
* HTTP (a real ``seedlings serve`` process, real PNG uploads, multipart): latency p50/p95/p99 and
  images/s at concurrency 1 and 16, micro-batching on vs off, fp32 vs int8; the ratio of HTTP
  images/s to model-only images/s; time to ready;
* server RSS after 100 and after 10,000 requests (``--quick``: 1,000), to show it does not grow.

Photos come from the real data set when it is on this machine (read in place, never copied),
else synthetic PNGs. Figures are printed, never asserted: they depend on the machine and on
what else runs on it. The load generator shares the CPUs with the server; say so when quoting.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def load_photos(n: int, data: Path) -> tuple[list[bytes], str]:
    """``n`` encoded photos: real PNGs spread over the classes when present, else synthetic ones."""
    files = sorted(data.rglob("*.png")) if data.is_dir() else []
    if files:
        pick = [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]
        return [f.read_bytes() for f in pick], f"{n} real photos from {data}"
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (300, 300, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out, f"{n} synthetic 300×300 PNGs (real data not found at {data})"


# -- model only --------------------------------------------------------------------------------------
def images_per_second(run, batch: np.ndarray, seconds: float) -> float:
    run(batch)  # warm-up
    n, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        run(batch)
        n += len(batch)
    return n / (time.perf_counter() - started)


def model_only(models: dict, inputs: np.ndarray, seconds: float) -> dict:
    """{name: {batch: img/s}} running each backend on already-normalised inputs (no decoding)."""
    from seedlings.preprocess import normalize

    results = {}
    for name, model in models.items():
        x = normalize(inputs, model.spec)
        results[name] = {b: images_per_second(model.run, np.ascontiguousarray(x[:b]), seconds)
                         for b in (1, 16)}
    return results


def validation_f1(run_dir: Path, models: dict) -> dict:
    """micro-F1 on the run's validation split, per precision (empty when the data is not here)."""
    try:
        from seedlings.data import Split, prepare
        from seedlings.fileio import read_json

        cfg = read_json(run_dir / "model.json", "model.json")["training"]
        data = prepare(cfg["data"], next(iter(models.values())).spec.image_size, progress=False)
        rows = data.subset(Split.load(run_dir / "split.json").val)
    except Exception as exc:  # a benchmark goes on without it
        print(f"(validation F1 skipped: {exc})")
        return {}
    images, labels = np.asarray(data.images[rows]), np.asarray(data.labels[rows])
    return {name: float((m.probabilities(images).argmax(1) == labels).mean()) for name, m in models.items()}


# -- HTTP -------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model_dir: Path, *args: str):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLINGS_")}
        cmd = [sys.executable, "-m", "seedlings.serving.cli", "--model", str(model_dir), "--port",
               str(self.port), "--log-level", "warning", *args]
        started = time.perf_counter()
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"server failed: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.02)
        self.ready_s = time.perf_counter() - started

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


async def _load(url: str, photos: list[bytes], requests: int,
                concurrency: int) -> tuple[list[float], float, int]:
    import httpx

    latencies: list[float] = []
    errors = 0
    counter = iter(range(requests))

    async def user(client):
        nonlocal errors
        for i in counter:
            data = photos[i % len(photos)]
            t = time.perf_counter()
            r = await client.post(url + "/v1/predict", files={"file": ("p.png", data, "image/png")})
            latencies.append(time.perf_counter() - t)
            errors += r.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(user(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall, errors


def load(url: str, photos: list[bytes], requests: int, concurrency: int) -> dict:
    latencies, wall, errors = asyncio.run(_load(url, photos, requests, concurrency))
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000, "img_s": requests / wall,
            "errors": errors}


def http_matrix(model_dir: Path, photos: list[bytes], precisions: list[str], n: int) -> tuple[list, dict]:
    rows, ready = [], {}
    for precision in precisions:
        for batching in (True, False):
            args = ["--precision", precision] + ([] if batching else ["--no-batching"])
            server = Server(model_dir, *args)
            ready[precision] = server.ready_s
            try:
                load(server.url, photos, 20, 4)  # warm the connection pool and the decoder
                for concurrency in (1, 16):
                    r = load(server.url, photos, n if concurrency == 16 else max(50, n // 4), concurrency)
                    rows.append({"precision": precision, "batching": batching, "c": concurrency, **r})
            finally:
                server.stop()
    return rows, ready


def rss_growth(model_dir: Path, photos: list[bytes], precision: str,
               total: int) -> tuple[float, float, float]:
    server = Server(model_dir, "--precision", precision)
    try:
        load(server.url, photos, 100, 16)
        after_100 = server.rss_mb()
        load(server.url, photos, total - 100, 16)
        return server.rss_mb(), after_100, server.ready_s
    finally:
        server.stop()


# -- wiring -----------------------------------------------------------------------------------------
def prepare_models(args) -> tuple[Path, dict, Path | None]:
    """The model folder to serve and {name: Model} for the model-only runs."""
    from seedlings.inference import Model

    run = Path(args.run) if args.run else None
    model_dir = Path(args.model) if args.model else None
    if model_dir is None:
        if run is None:
            raise SystemExit("pass --run RUN_DIR (a finished training run) and/or --model MODEL_DIR "
                             "(exported with --precision int8)")
        from seedlings.export.onnx import export_run

        model_dir = export_run(run, Path(tempfile.mkdtemp(prefix="bench-model-")) / "model", precision="int8")
    models = {}
    if run is not None:
        models["pytorch eager"] = Model(run, backend="torch")
    models["onnx fp32"] = Model(model_dir, backend="onnx", precision="fp32")
    if (model_dir / "model.int8.onnx").is_file():
        models["onnx int8"] = Model(model_dir, backend="onnx", precision="int8")
    return model_dir, models, run


def print_model_only(results: dict, f1: dict) -> None:
    from seedlings.tables import print_table

    eager = results.get("pytorch eager", {})
    fp32 = results["onnx fp32"]
    rows = []
    for name, r in results.items():
        vs_eager = f"{r[1] / eager[1]:.2f}×" if eager else "–"
        vs_fp32 = f"{r[1] / fp32[1]:.2f}× / {r[16] / fp32[16]:.2f}×"
        f1_text = f"{100 * f1[name]:.2f}" if name in f1 else "–"
        rows.append([name, f"{r[1]:.0f}", f"{r[16]:.0f}", vs_eager, vs_fp32, f1_text])
    print_table("Model only (images/s, decoded inputs)", ["backend", "batch 1", "batch 16", "b1 vs eager",
                                                          "vs fp32 (b1 / b16)", "val micro-F1 %"], rows)


def print_http(rows: list, results: dict) -> None:
    from seedlings.tables import print_table

    out = []
    for r in rows:
        model_name = f"onnx {r['precision']}"
        best = max(results[model_name].values()) if model_name in results else float("nan")
        out.append([r["precision"], "on" if r["batching"] else "off", r["c"], f"{r['p50']:.1f}",
                    f"{r['p95']:.1f}", f"{r['p99']:.1f}", f"{r['p99'] / r['p50']:.1f}", f"{r['img_s']:.0f}",
                    f"{100 * r['img_s'] / best:.0f}%", r["errors"]])
    print_table("HTTP /v1/predict (real PNG uploads, multipart, one photo per request)",
                ["precision", "batching", "concurrency", "p50 ms", "p95 ms", "p99 ms", "p99/p50", "img/s",
                 "of model-only", "errors"], out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="finished training run (for PyTorch eager and validation F1)")
    p.add_argument("--model", help="exported model folder (default: export --run with int8 to a temp folder)")
    p.add_argument("--data", default=str(REAL_DATA), help="photos to upload (default: the real data set)")
    p.add_argument("--quick", action="store_true", help="fewer requests: a 2-minute run instead of ~10")
    p.add_argument("--seconds", type=float, help="seconds per model-only measurement")
    args = p.parse_args(argv)
    os.environ.setdefault("COLUMNS", "140")  # rich tables: wide enough for every column when piped
    model_dir, models, run = prepare_models(args)
    try:
        return measure(args, model_dir, models, run)
    finally:
        if not args.model:  # the folder exported for this run
            shutil.rmtree(model_dir.parent, ignore_errors=True)


def measure(args, model_dir: Path, models: dict, run: Path | None) -> int:
    requests = 300 if args.quick else 1000
    total = 1000 if args.quick else 10_000
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    photos, what = load_photos(64, Path(args.data))
    print(f"photos: {what}; model: {model_dir}; CPUs: {os.cpu_count()}")
    inputs = np.stack([models["onnx fp32"].prepare(b) for b in photos[:16]])
    results = model_only(models, inputs, seconds)
    f1 = validation_f1(run, models) if run is not None else {}
    print_model_only(results, f1)
    precisions = [name.split()[-1] for name in models if name.startswith("onnx")]
    rows, ready = http_matrix(model_dir, photos, precisions, requests)
    print_http(rows, results)
    rss_end, rss_100, ready_s = rss_growth(model_dir, photos, precisions[-1], total)
    print(f"server RSS ({precisions[-1]}): {rss_100:.0f} MB after 100 requests, "
          f"{rss_end:.0f} MB after {total:,} "
          f"(+{rss_end - rss_100:.0f} MB)")
    print("time to ready: " + ", ".join(f"{k} {v:.2f}s" for k, v in ready.items()) + f", {ready_s:.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
