"""Feedback benchmark: how fast corrections are stored, and what storing them costs predictions.

    python bench/feedback_bench.py [--model MODEL_DIR] [--requests 800] [--rounds 3]

Printed side by side, in one run, on this machine:
* ``POST /v1/feedback`` writes/s and latency p50/p99 at concurrency 16, on SQLite (a file beside the
  service) and on PostgreSQL (a real server started for the run from Debian's binaries, as the tests do;
  skipped when it is not installed), each request a different photo (a new image row and a vote);
* ``POST /v1/predict`` images/s at concurrency 16 with feedback off, on (SQLite, no feedback traffic) and on
  with feedback traffic beside it (``--feedback-rate`` corrections a second, default 4: far more than people
  correcting a page send), in interleaved rounds so that a burst of other work on the machine hits every
  variant; the ratios to "off" (the issue's bound: at most 5 % less).

Photos: real ones from the data set when present (read in place, never copied), else synthetic.
Figures are printed, never asserted. The load generator shares the CPUs with the service.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from predict_bench import cpu_line  # noqa: E402
from serve_bench import REAL_DATA, Server, exchange, load, load_photos  # noqa: E402

BOUNDARY = "seedlings-feedback-bench"


def feedback_request(host: str, photo: bytes, species: str = "other:Bench Weed") -> bytes:
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"species\"\r\n\r\n{species}\r\n"
            f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + photo + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST /v1/feedback HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; "
            f"boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def unique(photo: bytes, i: int) -> bytes:
    """The photo with a PNG text chunk of its own after the header: a different sha256, the same pixels."""
    import struct
    import zlib

    data = b"bench\x00" + str(i).encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return photo[:33] + chunk + photo[33:]  # 8-byte signature + 25-byte IHDR chunk, then ours


async def _user(url: str, requests: list[bytes], counter, latencies: list[float], statuses: list[int]) -> None:
    host, port = url.split("//")[1].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for i in counter:
            head, seconds = await exchange(reader, writer, requests[i % len(requests)])
            latencies.append(seconds)
            statuses.append(int(head[9:12]))
    finally:
        writer.close()


def feedback_load(url: str, requests: list[bytes], n: int, concurrency: int) -> dict:
    latencies, statuses = [], []
    counter = iter(range(n))

    async def main():
        await asyncio.gather(*(_user(url, requests, counter, latencies, statuses) for _ in range(concurrency)))

    started = time.perf_counter()
    asyncio.run(main())
    wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else [0.0] * 99
    return {"writes_s": len(latencies) / wall, "p50": q[49] * 1000, "p99": q[98] * 1000,
            "errors": sum(s != 201 for s in statuses), "n": len(latencies)}


def postgres_url() -> tuple[object | None, str | None]:
    try:
        from tests.postgres import PostgresServer, bindir
    except ImportError as exc:
        return None, f"tests/postgres.py not importable ({exc})"
    if bindir() is None:
        return None, "PostgreSQL not installed (apt-get install postgresql)"
    server = PostgresServer(bindir())
    server.start()
    return server, server.new_database()


def write_figures(model: Path, photos: list[bytes], n: int) -> list[list[str]]:
    rows = []
    pg, pg_url = postgres_url()
    tmp = Path(tempfile.mkdtemp(prefix="feedback-bench-"))
    targets = [("SQLite", f"sqlite:///{tmp / 'feedback.db'}")]
    targets += [("PostgreSQL", pg_url)] if pg is not None else []
    try:
        for name, url in targets:
            server = Server(model, "--feedback-db", url, "--feedback-per-minute", "1000000")
            try:
                requests = [feedback_request(server.url.split("//")[1], unique(photos[i % len(photos)], i))
                            for i in range(n)]
                r = feedback_load(server.url, requests, n, 16)
            finally:
                server.stop()
            rows.append([name, f"{r['writes_s']:.0f}", f"{r['p50']:.1f}", f"{r['p99']:.1f}", str(r["errors"])])
        if pg is None:
            rows.append(["PostgreSQL", "-", "-", "-", pg_url])
    finally:
        if pg is not None:
            pg.close()
    return rows


def paced(url: str, requests: list[bytes], rate: float, stop: threading.Event, statuses: list[int]) -> None:
    """Send one correction every 1/rate seconds until ``stop`` (a steady trickle, not a flood)."""
    import socket

    host, port = url.split("//")[1].split(":")
    i, next_at = 0, time.perf_counter()
    while not stop.is_set():
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(requests[i % len(requests)].replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1))
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        statuses.append(int(answer[9:12] or 0))
        i += 1
        next_at += 1 / rate
        stop.wait(max(0.0, next_at - time.perf_counter()))


def predict_figures(model: Path, photos: list[bytes], n: int, rounds: int,
                    rate: float) -> tuple[dict[str, list[float]], list[int]]:
    tmp = Path(tempfile.mkdtemp(prefix="feedback-bench-"))
    off = Server(model)
    on = Server(model, "--feedback-db", f"sqlite:///{tmp / 'feedback.db'}", "--feedback-per-minute", "1000000")
    found: dict[str, list[float]] = {"off": [], "on": [], f"on + {rate:g} corrections/s": []}
    statuses: list[int] = []
    try:
        corrections = [feedback_request(on.url.split("//")[1], unique(photos[i % len(photos)], 10**6 + i))
                       for i in range(len(photos))]
        load(off.url, photos, 50, 4)  # warm both
        load(on.url, photos, 50, 4)
        for _ in range(rounds):
            found["off"].append(load(off.url, photos, n, 16)["img_s"])
            found["on"].append(load(on.url, photos, n, 16)["img_s"])
            stop = threading.Event()
            side = threading.Thread(target=paced, args=(on.url, corrections, rate, stop, statuses))
            side.start()
            try:
                found[f"on + {rate:g} corrections/s"].append(load(on.url, photos, n, 16)["img_s"])
            finally:
                stop.set()
                side.join()
    finally:
        off.stop()
        on.stop()
    return found, statuses


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, default=None, help="exported model folder (default: the packaged one)")
    p.add_argument("--requests", type=int, default=800, help="requests per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the prediction comparison")
    p.add_argument("--feedback-rate", type=float, default=4.0, help="corrections a second beside the predictions")
    args = p.parse_args()
    from seedlings.inference import resolve_model_dir
    from seedlings.tables import print_table

    model = resolve_model_dir(args.model)
    print(cpu_line(), flush=True)
    photos, where = load_photos(64, REAL_DATA)
    print(f"photos: {where}; model: {model}", flush=True)
    print_table("POST /v1/feedback, concurrency 16, a new photo each", ["database", "writes/s", "p50 ms", "p99 ms",
                                                                         "errors"],
                write_figures(model, photos, args.requests))
    found, statuses = predict_figures(model, photos, args.requests, args.rounds, args.feedback_rate)
    base = statistics.median(found["off"])
    print_table(f"POST /v1/predict images/s, concurrency 16 ({args.rounds} interleaved rounds, median)",
                ["feedback", "img/s (median)", "rounds", "vs off"],
                [[k, f"{statistics.median(v):.1f}", " ".join(f"{x:.1f}" for x in v),
                  f"{statistics.median(v) / base:.3f}"] for k, v in found.items()])
    print(f"corrections sent beside the predictions: {len(statuses)}, "
          f"{sum(s == 201 for s in statuses)} answered 201")
    print(cpu_line().split(";")[1].strip())


if __name__ == "__main__":
    main()
