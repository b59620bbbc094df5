"""The feedback loop on real photos, end to end, with the commands a user runs (a demonstration, not a test).

    python bench/feedback_demo.py --out /tmp/feedback-demo [--pair Black-grass "Loose Silky-bent"] [--n 50]
                                  [--epochs 2] [--lr 1e-4] [--threads 2]

1. The default model's own split: its 3,424 training photos stay the base set; of its 603 validation photos,
   ``--n`` of the confused pair (half each) become the field feedback, the other validation photos the fixed test
   set. (Symlinks in ``--out``: the data set is read in place, never copied.)
2. The default model is promoted into an empty registry, and ``seedlings serve --model REGISTRY --feedback-db``
   starts. Each feedback photo is sent to ``/v1/predict``, then to ``/v1/feedback`` with its true species, the
   prediction and the version (confirmations and corrections, as people using the page send them).
3. ``feedback stats``, ``feedback export --holdout 0.2``, ``train --init CURRENT --data BASE --data FEEDBACK/train``,
   ``export``, ``promote --test FIXED --test FEEDBACK/test``: the promotion table compares the current model and
   the candidate on the same photos. If it is accepted, the running service swaps to it (polled here).
Every step prints its wall time. Figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_bench import cpu_line  # noqa: E402
from serve_bench import REAL_DATA, free_port  # noqa: E402


def step(title: str):
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def done(t0: float) -> None:
    print(f"   ({time.perf_counter() - t0:.0f} s)", flush=True)


def seedlings(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "seedlings", *map(str, args)], text=True, capture_output=True)
    print(proc.stdout.rstrip())
    if proc.returncode and check:
        raise SystemExit(f"seedlings {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def link(files: list[str], root: Path) -> Path:
    for rel in files:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(REAL_DATA / rel)
    return root


def folders(out: Path, pair: list[str], n: int) -> tuple[Path, Path, list[str]]:
    from seedlings.inference import resolve_model_dir

    split = json.loads((resolve_model_dir(None) / "split.json").read_text())
    chosen = []
    for species in pair:
        chosen += sorted(f for f in split["val"] if f.split("/")[0] == species)[: n // len(pair)]
    base = link(split["train"], out / "base")
    fixed = link([f for f in split["val"] if f not in set(chosen)], out / "fixed-test")
    print(f"base {len(split['train'])} photos, fixed test {len(split['val']) - len(chosen)}, feedback {len(chosen)} "
          f"({', '.join(pair)})")
    return base, fixed, chosen


def send_feedback(url: str, chosen: list[str], version: str) -> None:
    agreed = 0
    with httpx.Client(base_url=url, timeout=60) as http:
        for rel in chosen:
            photo = (REAL_DATA / rel).read_bytes()
            said = http.post("/v1/predict", files={"file": (Path(rel).name, photo, "image/png")}).json()
            top = said["predictions"][0]
            agreed += top["species"] == rel.split("/")[0]
            r = http.post("/v1/feedback", files={"file": (Path(rel).name, photo, "image/png")},
                          data={"species": rel.split("/")[0], "predicted": top["species"],
                                "confidence": str(top["confidence"]), "model_version": version})
            r.raise_for_status()
    print(f"{len(chosen)} photos sent: the model was right on {agreed}, corrected on {len(chosen) - agreed}")


def serve(registry: Path, db: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "seedlings", "serve", "--model", str(registry), "--port", str(port),
                             "--feedback-db", db, "--registry-poll", "1", "--threads", str(threads),
                             "--feedback-per-minute", "100000", "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
        if proc.poll() is not None:
            raise SystemExit("the service did not start")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--pair", nargs=2, default=["Black-grass", "Loose Silky-bent"])
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, help="peak learning rate of the fine-tune (default: the recipe's, 1e-3)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    from seedlings.inference import resolve_model_dir

    print(cpu_line())
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    base, fixed, chosen = folders(args.out, args.pair, args.n)
    default = resolve_model_dir(None)
    version = json.loads((default / "model.json").read_text())["version"]
    registry, db = args.out / "registry", f"sqlite:///{args.out / 'feedback.db'}"
    t = step("promote the default model into an empty registry")
    seedlings("promote", default, "--registry", registry, "--test", fixed)
    done(t)
    t = step("serve the registry with feedback on; send the feedback photos")
    proc, url = serve(registry, db, args.threads)
    try:
        send_feedback(url, chosen, version)
        done(t)
        t = step("feedback stats and export")
        seedlings("feedback", "stats", "--db", db)
        seedlings("feedback", "export", "--db", db, "--out", args.out / "feedback", "--holdout", "0.2")
        done(t)
        lr = args.lr or "the recipe's"
        t = step(f"fine-tune from the current model on base + feedback ({args.epochs} epochs, lr {lr})")
        seedlings("train", "--init", registry / version, "--data", base, "--data", args.out / "feedback" / "train",
                  "--out", args.out / "run", "--epochs", args.epochs, "--threads", args.threads,
                  *(["--lr", args.lr] if args.lr else []))
        seedlings("export", args.out / "run", "--out", args.out / "candidate")
        done(t)
        t = step("promote: the current model against the candidate on the same photos")
        promoted = seedlings("promote", args.out / "candidate", "--registry", registry, "--test", fixed,
                             "--test", args.out / "feedback" / "test", "--as-version", f"{version}-fb1", check=False)
        print(promoted.stderr.strip()[-2000:])
        done(t)
        if promoted.returncode == 0:
            t = step("the running service follows")
            while httpx.get(url + "/v1/model", timeout=10).json()["version"] != f"{version}-fb1":
                time.sleep(0.5)
            print(f"serving {version}-fb1 without a restart")
            done(t)
    finally:
        proc.terminate()
        proc.wait()
    print(cpu_line().split(";")[1].strip())


if __name__ == "__main__":
    main()
