"""Cold start of the serve image: from `podman run` to the first 200 of POST /v1/predict, and where it goes.

    python bench/cold_start.py [--image localhost/seedlings-serve:test] [--runs 10]

This is what a user waits for when a serverless deployment (deploy/k8s/examples/knative) has scaled to zero
and the image is already on the node. Each run starts a fresh container as locked down as the manifests
(read-only root, no capabilities, host network, JSON logs) and posts a real PNG every 10 ms until one is
answered 200. The service's own log lines (UTC, ms) split each run into: until uvicorn has imported the app
and checked the model ("Started server process"), the lifespan (model loaded and warmed: "Application
startup complete"), the rest (first request). Then probes in fresh containers, `--probes` times each:
the container with an interpreter that does nothing, the import time of what `seedlings serve` imports
(`python -X importtime`), and one ONNX Runtime session of the packaged model (the service opens three:
`serve`'s model check, the predictor's check, the predictor's model). Medians; the CPU and the image size
(with its layers) are printed. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

from predict_bench import cpu_line

PODMAN = ["podman", "--runtime", "runc"]
LOCKED = ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
          "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=32768:32768"]
IMPORTS = "import seedlings.cli, seedlings.serving.cli, seedlings.serving.app, onnxruntime"
SESSION = """
import time, onnxruntime as ort
from seedlings.inference import resolve_model_dir
path = str(resolve_model_dir(None) / "model.onnx")
t = time.perf_counter()
ort.InferenceSession(path, providers=["CPUExecutionProvider"])
print(time.perf_counter() - t)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png() -> bytes:
    import numpy as np
    from PIL import Image

    img = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def multipart(data: bytes) -> tuple[bytes, dict]:
    b = uuid.uuid4().hex
    body = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="x.png"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={b}"}


def first_answer(url: str, body: bytes, headers: dict, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=10) as r:
                if r.status == 200:
                    return True
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.01)
    return False


def log_times(cid: str) -> dict[str, float]:
    """Wall-clock times (epoch s) of the service's start-up log lines, and the warm-up it reports."""
    out = subprocess.run([*PODMAN, "logs", cid], capture_output=True, text=True)
    found = {}
    for line in (out.stdout + out.stderr).splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        when = datetime.strptime(entry["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
        message = entry.get("message", "")
        for key, needle in (("started", "Started server process"), ("ready", "Application startup complete")):
            if needle in message and key not in found:
                found[key] = when
        if "warmed in" in message:
            found["warm"] = float(message.split("warmed in ")[1].split("s")[0])
    return found


def one_run(image: str, body: bytes, headers: dict) -> dict[str, float]:
    port = free_port()
    t0 = time.time()
    start = subprocess.run([*PODMAN, "run", "-d", "--rm", "--network", "host", *LOCKED,
                            "-e", f"SEEDLINGS_PORT={port}", "-e", "SEEDLINGS_JSON_LOGS=true", image],
                           capture_output=True, text=True, check=True)
    cid = start.stdout.strip()
    try:
        ok = first_answer(f"http://127.0.0.1:{port}/v1/predict", body, headers)
        total = time.time() - t0
        if not ok:
            out = subprocess.run([*PODMAN, "logs", cid], capture_output=True, text=True)
            sys.exit(f"no 200 in 120 s; logs:\n{out.stderr[-3000:]}")
        logs = log_times(cid)
    finally:
        subprocess.run([*PODMAN, "rm", "-f", "-t", "0", cid], capture_output=True)
    return {"first 200": total, "to uvicorn started (imports, model check)": logs["started"] - t0,
            "lifespan (model load + warm-up)": logs["ready"] - logs["started"], "of which warm-up": logs["warm"],
            "first request": t0 + total - logs["ready"]}


def in_container(image: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PODMAN, "run", "--rm", "--network", "none", *LOCKED, "--entrypoint", "python3",
                           image, *args], capture_output=True, text=True, check=True)


def probes(image: str, n: int) -> dict[str, float]:
    empty, imports, session, top = [], [], [], {}
    for _ in range(n):
        t = time.perf_counter()
        in_container(image, "-c", "pass")
        empty.append(time.perf_counter() - t)
        err = in_container(image, "-X", "importtime", "-c", IMPORTS).stderr
        rows = [line.split("|") for line in err.splitlines() if line.startswith("import time:") and "|" in line]
        cumulative = {r[2].rstrip(): int(r[1]) / 1e6 for r in rows[1:] if r[1].strip().isdigit()}
        roots = {name.strip(): s for name, s in cumulative.items() if not name.startswith("  ")}
        imports.append(sum(roots.values()))
        for name, s in roots.items():
            top.setdefault(name.strip(), []).append(s)
        session.append(float(in_container(image, "-c", SESSION).stdout.split()[-1]))
    heavy = sorted(((statistics.median(v), k) for k, v in top.items()), reverse=True)[:6]
    print("  imports, cumulative (median s): " + ", ".join(f"{k} {s:.2f}" for s, k in heavy))
    return {"container + python3 -c pass": statistics.median(empty),
            "imports of `seedlings serve` (python -X importtime)": statistics.median(imports),
            "one ONNX Runtime session of the model": statistics.median(session)}


def image_size(image: str) -> None:
    size = int(subprocess.run([*PODMAN, "image", "inspect", "--format", "{{.Size}}", image],
                              capture_output=True, text=True, check=True).stdout)
    layers = subprocess.run([*PODMAN, "history", "--format", "{{.Size}}\t{{.CreatedBy}}", image],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    print(f"{image}: {size / 1e6:.0f} MB; layers: "
          + "; ".join(f"{s} {c[:60].strip()}" for s, c in (line.split("\t", 1) for line in layers)
                      if not s.strip().startswith("0")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", default="localhost/seedlings-serve:test")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--probes", type=int, default=5)
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    image_size(args.image)
    body, headers = multipart(png())
    runs = []
    for i in range(args.runs):
        runs.append(one_run(args.image, body, headers))
        print(f"  run {i + 1}: " + ", ".join(f"{k} {v:.2f}s" for k, v in runs[-1].items()), flush=True)
    print(f"podman run → first 200 of POST /v1/predict, median of {args.runs} (min–max):")
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"  {key:<46} {statistics.median(values):5.2f} s  ({min(values):.2f}–{max(values):.2f})")
    print(f"probes in fresh containers, median of {args.probes}:")
    for key, value in probes(args.image, args.probes).items():
        print(f"  {key:<46} {value:5.2f} s")
    print(cpu_line().split(";")[1].strip())


if __name__ == "__main__":
    main()
