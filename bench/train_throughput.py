"""Training throughput, printed side by side (never asserted in tests).

1. Loader (prepared cache + batch augmentation) images/s next to the model's training
   images/s (fp32; 128 px unless --size): the loader must keep the model fed (ratio ≥ 3×); then the
   model's training images/s under bf16 autocast, the ratio beside it, and what `--precision auto` picks.
2. Seconds per epoch on the shared images for the default backbone, and images/s for 1 vs 2
   torchrun processes (each a real `seedlings train --epochs 1` run).

    python bench/train_throughput.py [--data DIR] [--model NAME] [--size PX] [--batch N] [--skip-epochs]
    python bench/train_throughput.py --model efficientnet_lite0 --size 160 --batch 48 --skip-epochs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from predict_bench import cpu_line  # bench/ is on the path of a script run from it

from seedlings.config import AugmentConfig
from seedlings.data import prepare
from seedlings.data.torchdata import CachedImages, augment, normalise
from seedlings.models import create_model
from seedlings.preprocess import PreprocessSpec
from seedlings.training.loop import autocast_context, cpu_supports_bf16

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "plant-seedlings" / "train"


def loader_rate(data, batch: int, n_batches: int) -> float:
    from torch.utils.data import DataLoader

    ds = CachedImages(data.images, data.labels, np.arange(len(data.files)))
    loader = DataLoader(ds, batch_size=batch, shuffle=True, drop_last=True)
    gen, spec, cfg = torch.Generator().manual_seed(0), PreprocessSpec(128), AugmentConfig()
    seen, start = 0, time.perf_counter()
    for i, (x, _) in enumerate(loader):
        normalise(augment(x, cfg, gen), spec, True)
        seen += len(x)
        if i + 1 == n_batches:
            break
    return seen / (time.perf_counter() - start)


def model_rate(name: str, size: int, batch: int, steps: int, precision: str = "fp32") -> float:
    """Training images/s of the model alone (forward, backward, AdamW step) under the run's autocast."""
    model = create_model(name, 12).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    x = torch.randn(batch, 3, size, size).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 12, (batch,))
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        with autocast_context(precision, "cpu"):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return batch / float(np.median(times[1:]))


def epoch_run(data_dir: Path, procs: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        base = ["-m", "seedlings", "train", "--data", str(data_dir), "--out", str(out), "--epochs", "1",
                "--threads", str(max(1, (os.cpu_count() or 2) // procs))]
        cmd = [sys.executable, *base] if procs == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *base]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - start
        row = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    return {"procs": procs, "wall_s": wall, "epoch_s": row["epoch_s"], "images_per_s": row["train_images_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--size", type=int, default=128, help="input pixels of the model's training step")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--skip-epochs", action="store_true", help="only the loader vs model comparison")
    args = ap.parse_args()
    if not args.data.is_dir():
        sys.exit(f"{args.data}: not found; pass --data DIR (the plant-seedlings train folder)")
    torch.set_num_threads(os.cpu_count() or 1)
    print(cpu_line())
    data = prepare(args.data, args.size)
    loader = loader_rate(data, args.batch, 30)
    model = model_rate(args.model, args.size, args.batch, 5)
    print(f"\n{args.model} at {args.size} px, batch {args.batch}{'':8}{'images/s':>10}")
    print(f"{'loader + augmentation':28}{loader:10.0f}")
    print(f"{'model training, fp32':28}{model:10.0f}")
    print(f"{'ratio loader / model':28}{loader / model:9.1f}×  (needs ≥ 3×)")
    # --precision auto picks bf16 where the CPU has bf16 units (AVX512-BF16, AMX); elsewhere it is emulated.
    bf16 = model_rate(args.model, args.size, args.batch, 5, "bf16")
    print(f"{'model training, bf16':28}{bf16:10.0f}  ({bf16 / model:.2f}× fp32; --precision auto picks "
          f"{'bf16' if cpu_supports_bf16() else 'fp32'} on this CPU)")
    if args.skip_epochs:
        return
    rows = [epoch_run(args.data, p) for p in (1, 2)]
    print(f"\n{'processes':>10}{'epoch s':>10}{'wall s':>10}{'images/s':>10}")
    for r in rows:
        print(f"{r['procs']:>10}{r['epoch_s']:>10.1f}{r['wall_s']:>10.1f}{r['images_per_s']:>10.1f}")
    print(f"2 vs 1 process: {rows[1]['images_per_s'] / rows[0]['images_per_s']:.2f}× images/s "
          f"(one machine, {os.cpu_count()} cores shared by the processes)")


if __name__ == "__main__":
    main()
