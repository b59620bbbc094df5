"""Train → kill -9 after the first checkpoint → --resume → evaluate → export (parity) → predict → Kaggle CSV."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import make_dataset


def seedlings(*args, env=None, check=True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "seedlings", *map(str, args)], capture_output=True, text=True,
                          env=env, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"seedlings {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_train_kill_resume_evaluate_export_predict(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=20)
    run = tmp_path / "run"
    env = {**os.environ, "SEEDLINGS_CACHE_DIR": str(tmp_path / "cache")}
    args = ["train", "--data", data, "--out", run, "--epochs", "4", "--image-size", "32", "--batch-size", "8",
            "--threads", "1", "--lr", "3e-3"]
    proc = subprocess.Popen([sys.executable, "-m", "seedlings", *map(str, args)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = run / "checkpoint.safetensors"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert ckpt.exists() and not (run / "model.json").exists()
    assert not list(run.glob("*.tmp")), "a half-written file was left behind"
    first_epochs = [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert first_epochs[0] == 1 and len(first_epochs) < 4

    again = seedlings(*args, env=env, check=False)
    assert again.returncode == 2 or "already holds a run" in again.stderr
    resumed = seedlings(*args, "--resume", env=env)
    assert f"after epoch {first_epochs[-1]}" in resumed.stderr
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for name in ("model.json", "weights.safetensors", "config.yaml", "split.json", "classes.json",
                 "curves.png", "confusion_matrix.png", "report.json"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "model.json").read_text())
    assert meta["metrics"]["f1_micro"] >= 0.6, meta["metrics"]
    # the command is recorded without the folder the program ran from (a model file names no path of its machine)
    assert meta["training"]["command"].startswith(f"__main__.py train --data {data} --out {run} "), meta["training"]

    report = json.loads(seedlings("evaluate", "--model", run, "--data", data, "--json", env=env).stdout)
    split = json.loads((run / "split.json").read_text())
    assert report["n"] == len(split["val"]) == 9 and report["scope"].startswith("validation")
    for key in ("accuracy", "f1_micro", "f1_macro", "per_class", "confusion_matrix", "classes"):
        assert key in report
    assert abs(report["f1_micro"] - meta["metrics"]["f1_micro"]) < 1e-9

    model_dir = tmp_path / "model"
    exported = seedlings("export", run, "--out", model_dir, env=env)
    assert "max |Δprob|" in exported.stderr
    assert (model_dir / "model.onnx").is_file()

    kaggle = tmp_path / "submission.csv"
    pred = seedlings("predict", data / "Sugar beet", data / "Black-grass" / "img_000.png", "--model", model_dir,
                     "--format", "json", "--kaggle-csv", kaggle, env=env)
    preds = json.loads(pred.stdout)
    assert len(preds) == 21 and {"species", "confidence", "unknown", "top_k", "file"} <= set(preds[0])
    with open(kaggle, newline="") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["file", "species"] and len(table) == 22
    assert table[1][0] == "img_000.png" and "/" not in "".join(r[0] for r in table)
    assert sum(r[1] == "Sugar beet" for r in table[1:21]) >= 15


def test_evaluate_all_flag_and_errors(trained_run, tmp_path):
    meta = json.loads((Path(trained_run) / "model.json").read_text())
    data = meta["training"]["data"]
    report = json.loads(seedlings("evaluate", "--model", trained_run, "--data", data, "--json", "--all").stdout)
    assert report["n"] == 42 and report["scope"].startswith("all images")
    bad = seedlings("evaluate", "--model", tmp_path / "nope", "--data", data, check=False)
    assert bad.returncode == 1 and "no such folder" in bad.stderr


def test_validation_folder_with_an_unknown_class_is_refused(tmp_path):
    train = make_dataset(tmp_path / "train", per_class=4)
    val = make_dataset(tmp_path / "val", per_class=2, classes=["Black-grass", "Maize"])
    p = seedlings("train", "--data", train, "--val-data", val, "--out", tmp_path / "run", "--epochs", "1",
                  "--image-size", "24", check=False)
    assert p.returncode == 1 and "Maize" in p.stderr and "not in training" in p.stderr


def test_evaluate_lists_and_shows_the_misclassified_images(trained_run, tmp_path):
    from PIL import Image

    meta = json.loads((Path(trained_run) / "model.json").read_text())
    data = Path(meta["training"]["data"])
    out = tmp_path / "errors.csv"
    p = seedlings("evaluate", "--model", trained_run, "--data", data, "--json", "--all", "--errors", out,
                  "--plots", tmp_path / "plots")
    report = json.loads(p.stdout)
    cm = report["confusion_matrix"]
    wrong = sum(cm[i][j] for i in range(len(cm)) for j in range(len(cm)) if i != j)
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert wrong > 0, "the 2-epoch model should still make mistakes, or this test shows nothing"
    assert len(rows) == wrong and f"wrote {wrong} misclassified" in p.stderr
    assert all(r["true"] != r["predicted"] and (data / r["file"]).is_file() for r in rows)
    assert all(r["true"] == Path(r["file"]).parent.name for r in rows)
    confidence = [float(r["confidence"]) for r in rows]
    assert confidence == sorted(confidence, reverse=True)
    assert {r["unknown"] for r in rows} <= {"true", "false"}
    with Image.open(tmp_path / "plots" / "errors.png") as sheet:
        assert sheet.width > 400 and sheet.height > 150

    bad = seedlings("evaluate", "--model", trained_run, "--data", data, "--errors", tmp_path, check=False)
    assert bad.returncode == 2 and "is a folder" in bad.stderr


def test_shared_errors_bench_counts_the_images_every_model_misses(trained_run, tmp_path):
    from seedlings.api import load_model
    from seedlings.evaluation.report import evaluate, misclassified

    data = json.loads((Path(trained_run) / "model.json").read_text())["training"]["data"]
    wrong = misclassified(evaluate(load_model(trained_run), data, progress=False))
    assert wrong, "the 2-epoch model should misclassify some validation images, or this test shows nothing"
    bench = Path(__file__).resolve().parents[2] / "bench" / "shared_errors.py"
    p = subprocess.run([sys.executable, bench, trained_run, trained_run, "--data", data, "--target", "0.9",
                        "--csv", tmp_path / "shared.csv"], capture_output=True, text=True, check=True)
    assert f"by at least one model: {len(wrong)}; by all of them: {len(wrong)}" in p.stdout
    assert "0 images only it gets right, 0 only the other; exact McNemar p = 1.00" in p.stdout
    with open(tmp_path / "shared.csv", newline="") as fh:
        table = list(csv.reader(fh))
    assert len(table) == len(wrong) + 1 and {r[0] for r in table[1:]} == {w["file"] for w in wrong}


def test_recipe_curves_bench_draws_each_runs_epochs_against_a_reference(trained_run, tmp_path):
    bench = Path(__file__).resolve().parents[2] / "bench" / "recipe_curves.py"
    rows = [json.loads(line) for line in (Path(trained_run) / "metrics.jsonl").read_text().splitlines()]
    best = max(r["val_f1_micro"] for r in rows)
    p = subprocess.run([sys.executable, bench, f"tiny={trained_run}", "--reference", trained_run,
                        "--out", tmp_path / "curves.png"], capture_output=True, text=True, check=True)
    assert f"{best:.4f}" in p.stdout and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    bad = subprocess.run([sys.executable, bench, f"x={tmp_path}"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no metrics.jsonl" in bad.stderr
