"""A real 2-process torchrun run (gloo) against a 1-process run of the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tests.helpers import make_dataset

pytestmark = [pytest.mark.dist, pytest.mark.slow]


def train_args(data, out, cache):
    return ["train", "--data", str(data), "--out", str(out), "--epochs", "5", "--image-size", "32",
            "--batch-size", "16", "--threads", "1", "--lr", "3e-3", "--cache-dir", str(cache), "--seed", "3"]


def test_two_processes_match_one(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=24)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "seedlings", *train_args(data, tmp_path / "one", tmp_path / "c")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "seedlings", *train_args(data, tmp_path / "two", tmp_path / "c")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert two.returncode == 0, two.stderr
    assert "2 process(es)" in two.stderr
    rows1 = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    rows2 = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows2] == [1, 2, 3, 4, 5], "only rank 0 writes, once per epoch"
    assert {r["world_size"] for r in rows2} == {2}
    m1 = json.loads((tmp_path / "one" / "model.json").read_text())["metrics"]
    m2 = json.loads((tmp_path / "two" / "model.json").read_text())["metrics"]
    assert m1["n"] == m2["n"] == 12, "validation is all-reduced over the whole split, not one shard"
    assert m1["f1_micro"] >= 0.75 and m2["f1_micro"] >= 0.75, (m1, m2)
    assert abs(m1["f1_micro"] - m2["f1_micro"]) <= 0.25
    assert abs(rows1[-1]["train_loss"] - rows2[-1]["train_loss"]) < 0.35
