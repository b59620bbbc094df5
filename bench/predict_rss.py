"""Peak memory of `seedlings predict PATH --out DIR` against the size of the archive: it must not grow with it.

    python bench/predict_rss.py [--data DIR] [--files 5000 50000] [--workers W] [--model MODEL_DIR]

Each size is a temporary folder of symbolic links to the photos of --data, cycled to reach N files (never
copies; 1,000 links a sub-folder, as an archive of surveys would be), predicted by a fresh
`python -m seedlings predict DIR --out OUT` process. The process tree is sampled every 0.1 s: the peak of its
summed RSS (the main process and its decoding workers; shared pages counted once per process, so an upper
bound) and the main process's own peak (VmHWM). Also printed: the time, images/s, rows written, and the CPU.
Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from predict_bench import DATA, cpu_line

SAMPLE_S = 0.1


def link_archive(data: Path, n: int, out: Path) -> int:
    photos = sorted(data.rglob("*.png"))
    if not photos:
        sys.exit(f"no .png under {data}")
    for i in range(n):
        src = photos[i % len(photos)]
        dest = out / f"survey-{i // 1000:03d}" / f"{i:06d}-{src.parent.name.replace(' ', '_')}-{src.name}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(src)
    return n


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of one process, in kB ({} once it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return {k: int(v.split()[0]) for k, v in (line.split(":", 1) for line in lines) if k in ("VmRSS", "VmHWM")}


def _tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def measure(cmd: list[str]) -> dict:
    """Run cmd; its time, peak summed RSS of its process tree and its own peak RSS (MB)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_tree = peak_main = processes = 0
    while proc.poll() is None:
        pids = _tree(proc.pid)
        stats = [_status(p) for p in pids]
        peak_tree = max(peak_tree, sum(s.get("VmRSS", 0) for s in stats))
        peak_main = max(peak_main, stats[0].get("VmHWM", 0))
        processes = max(processes, len([s for s in stats if s]))
        time.sleep(SAMPLE_S)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr.read()[-3000:]}")
    return {"seconds": seconds, "tree_mb": peak_tree / 1024, "main_mb": peak_main / 1024, "processes": processes}


def rows_written(out: Path) -> int:
    import pyarrow.parquet as pq

    return sum(pq.read_metadata(p).num_rows for p in out.glob("part-*.parquet"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--files", type=int, nargs="+", default=[5000, 50000])
    ap.add_argument("--workers", type=int, help="decoding processes (default: predict's own, the CPU quota)")
    ap.add_argument("--model", help="model folder (default: the packaged model)")
    args = ap.parse_args()
    print(cpu_line(), flush=True)
    extra = (["--model", args.model] if args.model else []) + (
        ["--workers", str(args.workers)] if args.workers is not None else [])
    results = []
    for n in args.files:
        with tempfile.TemporaryDirectory(prefix="predict-rss-") as tmp:
            archive, out = Path(tmp) / "archive", Path(tmp) / "out"
            link_archive(args.data, n, archive)
            r = measure([sys.executable, "-m", "seedlings", "predict", str(archive), "--out", str(out), *extra])
            r.update(files=n, rows=rows_written(out))
            results.append(r)
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    print(f"`seedlings predict DIR --out OUT{' ' + ' '.join(extra) if extra else ''}`, photos from {args.data}:")
    print(f"  {'files':>7} {'rows':>7} {'time s':>7} {'images/s':>9} {'peak RSS, all processes':>24} "
          f"{'peak RSS, main process':>23} {'processes':>10}")
    for r in results:
        print(f"  {r['files']:>7,} {r['rows']:>7,} {r['seconds']:>7.0f} {r['files'] / r['seconds']:>9.1f} "
              f"{r['tree_mb']:>21.0f} MB {r['main_mb']:>20.0f} MB {r['processes']:>10}")
    print(cpu_line().split(";")[1].strip())


if __name__ == "__main__":
    main()
