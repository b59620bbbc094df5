"""Batch prediction into Parquet parts: shards that add up to the whole, a SIGKILL that loses and repeats
nothing, unreadable files kept apart with their reason, and the results read back as every other format."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from tests.helpers import make_dataset, seedlings_cli

from seedlings.batch import BatchJob, Shard, list_files, parse_shard, read_results, run
from seedlings.errors import UsageError

pytest.importorskip("pyarrow", reason="the batch extra: pip install -e '.[batch]'")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = make_dataset(tmp_path_factory.mktemp("archive") / "photos", per_class=8)
    (root / "Sugar beet" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (root / "Sugar beet" / "empty.jpg").write_bytes(b"")
    return root


def table(rows: list[dict]) -> list[tuple]:
    return [(r["file"], r["species"], round(r["confidence"], 6), r["unknown"], tuple(r["top_k_species"]))
            for r in rows]


def test_shards_add_up_to_the_whole_run_row_for_row(archive, exported_model, tmp_path):
    from seedlings.api import load_model

    model = load_model(exported_model)
    whole = run(model, BatchJob([str(archive)], tmp_path / "whole", part_size=4, workers=0, progress=False))
    for i in range(3):
        run(model, BatchJob([str(archive)], tmp_path / "sharded", Shard(i, 3), part_size=4, workers=0,
                            progress=False))
    rows, errors = read_results(tmp_path / "whole")
    shard_rows, shard_errors = read_results(tmp_path / "sharded")
    assert whole["rows"] == len(rows) == 24 and whole["errors"] == 2 and whole["finished"]
    assert table(shard_rows) == table(rows) and shard_errors == errors
    assert {e["file"] for e in errors} == {"Sugar beet/broken.png", "Sugar beet/empty.jpg"}
    assert all(e["error"] for e in errors)
    names = [r["file"] for r in rows]
    assert names == sorted(names) and len(set(names)) == len(names)
    assert {r["model_version"] for r in rows} == {model.version}


def test_a_file_added_later_moves_no_other_file_between_shards(archive, tmp_path):
    before = {n: Shard(0, 4).holds(n) for _, n in list_files([archive])}
    extra = archive / "Sugar beet" / "zz_new.png"
    extra.write_bytes((archive / "Sugar beet" / "img_000.png").read_bytes())
    try:
        after = {n: Shard(0, 4).holds(n) for _, n in list_files([archive])}
    finally:
        extra.unlink()
    assert {n: after[n] for n in before} == before and "Sugar beet/zz_new.png" in after


def test_the_shard_comes_from_the_flag_or_the_indexed_job():
    assert parse_shard("2/5", {}) == Shard(2, 5)
    assert parse_shard(None, {"JOB_COMPLETION_INDEX": "3", "JOB_COMPLETIONS": "4"}) == Shard(3, 4)
    assert parse_shard(None, {}) == Shard(0, 1)
    for bad in ("5/5", "a/b", "1"):
        with pytest.raises(UsageError, match="I/N"):
            parse_shard(bad, {})
    with pytest.raises(UsageError, match="JOB_COMPLETIONS"):
        parse_shard(None, {"JOB_COMPLETION_INDEX": "0"})


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(archive, exported_model, tmp_path):
    """Killed as soon as its first part is on disk; the rerun skips finished parts, redoes the rest."""
    args = [str(archive), "--model", str(exported_model), "--part-size", "2", "--workers", "1", "--tta"]
    assert seedlings_cli("predict", *args, "--out", tmp_path / "whole").returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "seedlings", "predict", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list(out.glob("part-*.parquet")))
    assert 1 <= written < 13, f"{written} parts written before the kill (13 in all): not mid-run"
    rerun = seedlings_cli("predict", *args, "--out", out)
    assert rerun.returncode == 0 and "already done" in rerun.stderr, rerun.stderr
    assert table(read_results(out)[0]) == table(read_results(tmp_path / "whole")[0])
    assert read_results(out)[1] == read_results(tmp_path / "whole")[1]
    manifest = json.loads((out / "manifest-s0of1.json").read_text())
    assert manifest["finished"] and manifest["rows"] == 24 and manifest["errors"] == 2


def test_results_prints_every_format_and_the_kaggle_csv(archive, exported_model, tmp_path):
    out = tmp_path / "r"
    assert seedlings_cli("predict", archive, "--model", exported_model, "--out", out, "--workers", "0").returncode == 0
    p = seedlings_cli("results", out, "--format", "json", "--kaggle-csv", tmp_path / "sub.csv")
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert len(rows) == 26 and sum("error" in r for r in rows) == 2
    with open(tmp_path / "sub.csv", newline="") as f:
        sub = list(csv.reader(f))
    assert sub[0] == ["file", "species"] and len(sub) == 25
    assert seedlings_cli("results", tmp_path / "nothing").returncode == 1
