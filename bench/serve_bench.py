"""Serving benchmark: model-only throughput and end-to-end HTTP figures, printed side by side.

    python bench/serve_bench.py --run RUN_DIR [--model MODEL_DIR] [--quick] [--client raw|httpx] [--workers N]
    python bench/serve_bench.py --hostile [--model MODEL_DIR]   # hostile load only

* the machine: CPU, the instruction sets int8 depends on (AVX-512 VNNI / AVX-VNNI / AMX), load average;
* model only: PyTorch eager (needs ``--run``) vs ONNX Runtime fp32 vs int8, images/s at batch 1 and 16
  (best of ``--rounds`` interleaved rounds, so a burst of other work on the machine hits every backend);
* int8 vs fp32 validation micro-F1 (needs ``--run`` whose data folder is present);
* HTTP (a real ``seedlings serve`` process, real PNG uploads, multipart): latency p50/p95/p99 and
  images/s at concurrency 1 and 16, micro-batching on vs off, fp32 vs int8; the ratio of HTTP
  images/s to model-only images/s; the server's CPU time per request and the mean batch size; time to ready;
* server RSS after 100 and after 10,000 requests (``--quick``: 1,000), to show it does not grow;
* the size of the serve-only environment (``.venv-serve``) when it exists.

Photos come from the real data set when it is on this machine (read in place, never copied),
else synthetic PNGs. Figures are printed, never asserted: they depend on the machine and on
what else runs on it. The load generator shares the CPUs with the server; say so when quoting.
The default load generator (``--client raw``) sends pre-encoded multipart requests over
keep-alive sockets and costs ~0.1 ms of CPU per request; ``--client httpx`` costs ~3.5 ms, which
on a 2-core machine is CPU taken from the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REAL_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def free_port() -> int:
    """A TCP port that nothing listens on now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def model_only(models: dict, inputs: np.ndarray, seconds: float, rounds: int) -> dict:
    """{name: {batch: img/s}} running each backend on already-normalised inputs (no decoding).

    Rounds are interleaved (every backend, then again) and the best round is kept: other work on
    a shared machine slows some rounds down, never speeds one up.
    """
    from seedlings.preprocess import normalize

    batches = {name: {b: np.ascontiguousarray(normalize(inputs, m.spec)[:b]) for b in (1, 16)}
               for name, m in models.items()}
    results = {name: {1: 0.0, 16: 0.0} for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            for b, x in batches[name].items():
                results[name][b] = max(results[name][b], images_per_second(model.backend, x, seconds / rounds))
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
    if not len(rows):
        print("(validation F1 skipped: the run trained on every image, --val-fraction 0; its model.json metrics are "
              "its recipe's out-of-fold scores)")
        return {}
    images, labels = np.asarray(data.images[rows]), np.asarray(data.labels[rows])
    scores = {}
    for name, m in models.items():
        try:
            scores[name] = float((m.probabilities(images).argmax(1) == labels).mean())
        except Exception as exc:  # e.g. --model exported at another image size than --run
            print(f"(validation F1 of {name} skipped: {str(exc).splitlines()[0]})")
    return scores


# -- HTTP -------------------------------------------------------------------------------------------
class Server:
    def __init__(self, model_dir: Path, *args: str):
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEEDLINGS_")}
        cmd = [sys.executable, "-m", "seedlings", "serve", "--model", str(model_dir), "--port",
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

    def pids(self) -> list[int]:
        """The server process and its worker processes (``--workers N``)."""
        pids, parents = [self.proc.pid], {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        for pid in pids:  # grows while it is walked: children, then theirs
            pids.extend(p for p, ppid in parents.items() if ppid == pid)
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server's processes so far (all their threads)."""
        total = 0
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def batches(self) -> tuple[float, float]:
        """(model runs, images) so far, from the server's own metrics."""
        import httpx

        text = httpx.get(self.url + "/metrics", timeout=30).text
        values = dict(line.split()[:2] for line in text.splitlines()
                      if line.startswith(("seedlings_batch_size_count ", "seedlings_batch_size_sum ")))
        return float(values["seedlings_batch_size_count"]), float(values["seedlings_batch_size_sum"])

    def rss_mb(self) -> float:
        """Resident memory of the server's processes together."""
        kb = 0
        for pid in self.pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            kb += sum(int(line.split()[1]) for line in lines if line.startswith("VmRSS:"))
        return kb / 1024

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)


def multipart_request(host: str, photo: bytes) -> bytes:
    """One complete ``POST /v1/predict`` (multipart field ``file``), encoded once, sent many times."""
    boundary = "seedlings-bench-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nUser-Agent: serve-bench\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def exchange(reader, writer, request: bytes) -> tuple[bytes, float]:
    """Send one pre-encoded request on a keep-alive connection; (the response head, seconds to the whole answer)."""
    t = time.perf_counter()
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    await reader.readexactly(length)
    return head, time.perf_counter() - t


async def _raw_user(url: str, requests: list[bytes], counter, latencies: list[float]) -> int:
    """A keep-alive HTTP/1.1 connection sending pre-encoded requests: ~0.1 ms of client CPU per request,
    so the load generator takes little from the server on a small machine (httpx takes ~3.5 ms)."""
    host, port = url.split("//")[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    errors = 0
    try:
        for i in counter:
            head, seconds = await exchange(reader, writer, requests[i % len(requests)])
            latencies.append(seconds)
            errors += head[9:12] != b"200"
            if b"connection: close" in head.lower():
                writer.close()
                reader, writer = await asyncio.open_connection(host, int(port))
    finally:
        writer.close()
    return errors


async def _httpx_user(client, url: str, photos: list[bytes], counter, latencies: list[float]) -> int:
    errors = 0
    for i in counter:
        t = time.perf_counter()
        r = await client.post(url + "/v1/predict", files={"file": ("p.png", photos[i % len(photos)], "image/png")})
        latencies.append(time.perf_counter() - t)
        errors += r.status_code != 200
    return errors


async def _load(url: str, photos: list[bytes], requests: int, concurrency: int,
                client: str) -> tuple[list[float], float, int]:
    import httpx

    latencies: list[float] = []
    counter = iter(range(requests))
    started = time.perf_counter()
    if client == "raw":
        encoded = [multipart_request(url.split("//")[1], p) for p in photos]
        errors = await asyncio.gather(*(_raw_user(url, encoded, counter, latencies) for _ in range(concurrency)))
    else:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=120, limits=limits) as c:
            errors = await asyncio.gather(*(_httpx_user(c, url, photos, counter, latencies)
                                            for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, sum(errors)


def load(url: str, photos: list[bytes], requests: int, concurrency: int, client: str = "raw") -> dict:
    latencies, wall, errors = asyncio.run(_load(url, photos, requests, concurrency, client))
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {"p50": q[49] * 1000, "p95": q[94] * 1000, "p99": q[98] * 1000, "img_s": requests / wall,
            "errors": errors}


def measured_load(server: Server, photos: list[bytes], requests: int, concurrency: int, client: str) -> dict:
    """``load`` plus the server's CPU time per request and its mean batch size over the same requests."""
    runs, images = server.batches()
    cpu = server.cpu_seconds()
    r = load(server.url, photos, requests, concurrency, client)
    cpu_ms = 1000 * (server.cpu_seconds() - cpu) / requests
    runs2, images2 = server.batches()
    return {**r, "cpu_ms": cpu_ms, "batch": (images2 - images) / max(1.0, runs2 - runs)}


def http_matrix(model_dir: Path, photos: list[bytes], precisions: list[str], n: int,
                client: str, workers: int = 1) -> tuple[list, dict]:
    rows, ready = [], {}
    for precision in precisions:
        for batching in (True, False):
            args = ["--precision", precision, "--workers", str(workers)] + ([] if batching else ["--no-batching"])
            server = Server(model_dir, *args)
            ready[precision] = server.ready_s
            try:
                load(server.url, photos, 20, 4, client)  # warm the connections and the decoder
                for concurrency in (1, 16):
                    requests = n if concurrency == 16 else max(50, n // 4)
                    r = measured_load(server, photos, requests, concurrency, client)
                    rows.append({"precision": precision, "batching": batching, "c": concurrency, **r})
            finally:
                server.stop()
    return rows, ready


def rss_growth(model_dir: Path, photos: list[bytes], precision: str,
               total: int, client: str, workers: int = 1) -> tuple[float, float, float]:
    server = Server(model_dir, "--precision", precision, "--workers", str(workers))
    try:
        load(server.url, photos, 100, 16, client)
        after_100 = server.rss_mb()
        load(server.url, photos, total - 100, 16, client)
        return server.rss_mb(), after_100, server.ready_s
    finally:
        server.stop()


# -- wiring -----------------------------------------------------------------------------------------
def prepare_models(args) -> tuple[Path, dict, Path | None]:
    """The model folder to serve and {name: Model} for the model-only runs."""
    from seedlings.api import load_model
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
        models["pytorch eager"] = load_model(run)  # the torch backend (a run folder holds PyTorch weights)
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
                    f"{100 * r['img_s'] / best:.0f}%", f"{r['cpu_ms']:.1f}", f"{r['batch']:.1f}", r["errors"]])
    print_table("HTTP /v1/predict (real PNG uploads, multipart, one photo per request)",
                ["precision", "batching", "concurrency", "p50 ms", "p95 ms", "p99 ms", "p99/p50", "img/s",
                 "of model-only", "server CPU ms/req", "mean batch", "errors"], out)


# -- hostile load (--hostile) ----------------------------------------------------------------------
# Pixel bombs, slow and stalled connections, oversized chunked bodies, a stalled upload during shutdown.
# For each attack: what the server answered, its peak and after-burst RSS against idle (pixel bombs), how
# many connections it dropped and how long each took (slow clients), how many bytes it read past its
# limit (chunked), how long shutdown took (drain). Run it against an older checkout by putting that
# checkout's ``src`` first on PYTHONPATH: the server runs from there.
BOMB_SIDE = 7000
HOLD_S = 60  # how long a slow client keeps trying before the bench gives up on the server dropping it


def bomb_png(side: int = BOMB_SIDE) -> bytes:
    """A plain-colour PNG: ~150 KB that decode to side² pixels (147 MB of RGB at 7,000²)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 60)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def multipart(host: str, photos: list[bytes]) -> bytes:
    boundary = "hostile-bench"
    parts = b"".join(f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b{i}.png\"\r\n"
                     f"Content-Type: image/png\r\n\r\n".encode() + p + b"\r\n" for i, p in enumerate(photos))
    body = parts + f"--{boundary}--\r\n".encode()
    return (f"POST /v1/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}"
            f"\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakSampler:
    """The highest RSS of a process, sampled every 10 ms on a thread."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(0.01)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak


def send_raw(port: int, request: bytes, timeout: float = 300) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return answer[9:12].decode() or "closed"


def pixel_bombs(server, concurrency: int = 8, per_request: int = 4) -> dict:
    """``concurrency`` simultaneous requests of ``per_request`` 7,000² PNGs: peak RSS and RSS afterwards."""
    request = multipart(f"127.0.0.1:{server.port}", [bomb_png()] * per_request)
    pid = server.pids()[-1]
    idle = rss_mb(pid)
    sampler = PeakSampler(pid)
    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        statuses = list(pool.map(lambda _: send_raw(server.port, request), range(concurrency)))
    wall = time.perf_counter() - started
    time.sleep(2)
    peak = sampler.stop()
    return {"idle": idle, "peak": peak, "after": rss_mb(pid), "wall": wall,
            "statuses": {s: statuses.count(s) for s in sorted(set(statuses))}}


def _slow_client(port: int, kind: str) -> float | None:
    """Seconds until the server dropped this connection; None when it was still open after HOLD_S."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=HOLD_S) as sock:
        if kind == "partial":
            sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-")
        header = b"GET /healthz HTTP/1.1\r\nHost: bench\r\nX-Drip: " + b"a" * 10_000
        for i in range(10_000):
            if kind == "drip":
                try:
                    sock.sendall(header[i:i + 1])
                except OSError:
                    return time.monotonic() - started
            if select.select([sock], [], [], 2 if kind == "drip" else 0.5)[0]:
                try:
                    while sock.recv(65536):
                        pass
                except OSError:
                    pass
                return time.monotonic() - started
            if time.monotonic() - started > HOLD_S:
                return None
    return None


def slow_connections(server, per_kind: int = 10) -> dict:
    """Idle, partial-header and header-dripping connections (a byte every 2 s): how many were dropped, when."""
    kinds = ["idle", "partial", "drip"]
    with ThreadPoolExecutor(per_kind * len(kinds)) as pool:
        futures = {k: [pool.submit(_slow_client, server.port, k) for _ in range(per_kind)] for k in kinds}
        results = {k: [f.result() for f in fs] for k, fs in futures.items()}
    return {k: {"dropped": sum(t is not None for t in ts), "of": len(ts),
                "median_s": statistics.median([t for t in ts if t is not None]) if any(ts) else None}
            for k, ts in results.items()}


def chunked_over_limit(server, limit: int = 10 * 1024 * 1024, cap: int = 200 * 1024 * 1024) -> dict:
    """Stream a chunked body past the body limit: bytes the server took before closing, and how long."""
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"\0" * (1 << 20))
    sent, started, status = 0, time.monotonic(), "open"
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: image/png\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        while sent < cap:
            try:
                sock.sendall(chunk)
            except OSError:
                status = "closed"
                break
            sent += len(chunk)
            if select.select([sock], [], [], 0)[0] and sock.recv(64)[9:12] == b"413":
                status = "413"
        return {"sent_mb": sent / 2**20, "limit_mb": limit / 2**20, "seconds": time.monotonic() - started,
                "ended": status}


def stalled_upload_on_shutdown(server) -> dict:
    """A stalled upload, then SIGTERM: the answer it got and how long the server took to exit."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=120)
    sock.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: bench\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 50000\r\n\r\n\x89PNG")
    time.sleep(0.5)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except OSError:
        pass
    server.proc.wait(120)
    sock.close()
    return {"answer": answer[9:12].decode() or "closed", "exit_s": time.monotonic() - started}


def run_hostile(server_factory, model_dir) -> None:
    """Each attack on a fresh server (default settings), printed as it finishes."""
    for concurrency, per_request in ((8, 4), (8, 1)):
        server = server_factory(model_dir)
        r = pixel_bombs(server, concurrency, per_request)
        server.stop()
        print(f"pixel bombs {concurrency} x {per_request} x {BOMB_SIDE}²: answers {r['statuses']}, "
              f"RSS idle {r['idle']:.0f} MB, peak {r['peak']:.0f} MB, after {r['after']:.0f} MB "
              f"({100 * (r['after'] / r['idle'] - 1):+.0f} % of idle), {r['wall']:.1f} s")
    server = server_factory(model_dir)
    for kind, r in slow_connections(server).items():
        median = f"median {r['median_s']:.1f} s" if r["median_s"] is not None else "none dropped"
        print(f"slow connections ({kind}): {r['dropped']}/{r['of']} dropped within {HOLD_S} s, {median}")
    r = chunked_over_limit(server)
    print(f"chunked body over the {r['limit_mb']:.0f} MiB limit: server took {r['sent_mb']:.0f} MiB in "
          f"{r['seconds']:.1f} s, then {r['ended']}")
    r = stalled_upload_on_shutdown(server)
    print(f"stalled upload during shutdown: answered {r['answer']}, server exited after {r['exit_s']:.1f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", help="finished training run (for PyTorch eager and validation F1)")
    p.add_argument("--model", help="exported model folder (default: export --run with int8 to a temp folder)")
    p.add_argument("--data", default=str(REAL_DATA), help="photos to upload (default: the real data set)")
    p.add_argument("--quick", action="store_true", help="fewer requests: a 2-minute run instead of ~10")
    p.add_argument("--seconds", type=float, help="seconds per model-only measurement (all rounds together)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved model-only rounds; the best is kept (3)")
    p.add_argument("--client", choices=["raw", "httpx"], default="raw",
                   help="load generator: pre-encoded requests on raw sockets (default) or httpx")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (`seedlings serve --workers`), each with CPUs / workers threads (1)")
    p.add_argument("--hostile", action="store_true",
                   help="hostile load only (pixel bombs, slow connections, oversized chunked bodies, drain): "
                        "needs only --model (default: the packaged model)")
    args = p.parse_args(argv)
    if args.hostile:
        return hostile_main(args)
    os.environ.setdefault("COLUMNS", "140")  # rich tables: wide enough for every column when piped
    model_dir, models, run = prepare_models(args)
    try:
        return measure(args, model_dir, models, run)
    finally:
        if not args.model:  # the folder exported for this run
            shutil.rmtree(model_dir.parent, ignore_errors=True)


def hostile_main(args) -> int:
    from seedlings.inference import DEFAULT_MODEL_DIR

    model_dir = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    print(machine())
    print(f"model: {model_dir}; server: default settings (`seedlings serve --model ...`)")
    run_hostile(Server, model_dir)
    return 0


def machine() -> str:
    """The CPU and what int8 speed depends on: without VNNI or AMX, int8 convolutions use AVX2 only."""
    import onnxruntime

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), []))
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return (f"CPU: {name}, {os.cpu_count()} CPUs, {' '.join(isa) or 'no AVX2'}; onnxruntime "
            f"{onnxruntime.__version__}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def serve_env_mb(venv: Path = Path(__file__).resolve().parents[1] / ".venv-serve") -> float | None:
    """Disk size of the serve-only environment (what ``make run`` installs), if it is here."""
    if not venv.is_dir():
        return None
    return sum(f.lstat().st_size for f in venv.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def measure(args, model_dir: Path, models: dict, run: Path | None) -> int:
    requests = 300 if args.quick else 1000
    total = 1000 if args.quick else 10_000
    seconds = args.seconds or (6.0 if args.quick else 15.0)
    photos, what = load_photos(64, Path(args.data))
    print(machine())
    print(f"photos: {what}; model: {model_dir}; load generator: {args.client}; server workers: {args.workers}")
    inputs = np.stack([models["onnx fp32"].prepare(b) for b in photos[:16]])
    results = model_only(models, inputs, seconds, args.rounds)
    f1 = validation_f1(run, models) if run is not None else {}
    print_model_only(results, f1)
    precisions = [name.split()[-1] for name in models if name.startswith("onnx")]
    rows, ready = http_matrix(model_dir, photos, precisions, requests, args.client, args.workers)
    print_http(rows, results)
    rss_end, rss_100, ready_s = rss_growth(model_dir, photos, precisions[-1], total, args.client, args.workers)
    print(f"server RSS ({precisions[-1]}): {rss_100:.0f} MB after 100 requests, "
          f"{rss_end:.0f} MB after {total:,} "
          f"(+{rss_end - rss_100:.0f} MB)")
    print("time to ready: " + ", ".join(f"{k} {v:.2f}s" for k, v in ready.items()) + f", {ready_s:.2f}s")
    size = serve_env_mb()
    print(f"serve-only environment (.venv-serve): {size:.0f} MB" if size is not None
          else "serve-only environment: not built here (make venv-serve)")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
