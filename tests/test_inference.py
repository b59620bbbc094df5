"""inference.py: the torch-free model API (ONNX model folders), as the service uses it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from seedlings.errors import ImageError, SeedlingsError
from seedlings.inference import DEFAULT_MODEL_DIR, Model, expand_inputs, needs_torch, resolve_model_dir


def test_resolve_model_dir_says_what_is_wrong(tmp_path):
    assert resolve_model_dir(None) == DEFAULT_MODEL_DIR
    with pytest.raises(SeedlingsError, match="no such folder"):
        resolve_model_dir(tmp_path / "missing")
    (tmp_path / "checkpoint.safetensors").write_bytes(b"")
    with pytest.raises(SeedlingsError, match="run has not finished.*--resume"):
        resolve_model_dir(tmp_path)


def test_which_folders_need_torch(trained_run, exported_model):
    assert needs_torch(trained_run) and not needs_torch(exported_model)
    assert needs_torch(exported_model, backend="torch") and not needs_torch(trained_run, precision="int8")


def test_a_run_folder_is_not_loaded_without_its_torch_backend(trained_run):
    with pytest.raises(SeedlingsError, match="PyTorch weights only; load it with seedlings.load_model"):
        Model(trained_run)


def test_the_onnx_model_reads_everything_from_its_model_file(exported_model):
    model = Model(exported_model, backend="onnx")
    meta = json.loads((exported_model / "model.json").read_text())
    assert model.backend_name == "onnx" and model.classes == meta["classes"]
    assert model.spec.image_size == meta["preprocess"]["image_size"] == meta["image_size"]
    assert model.file.calibration.temperature == meta["calibration"]["temperature"]
    images = np.random.default_rng(0).integers(0, 256, (3, model.spec.image_size, model.spec.image_size, 3),
                                               dtype=np.uint8)
    probs, distance = model.assess(images)
    assert probs.shape == (3, len(model.classes)) and np.allclose(probs.sum(1), 1) and distance.shape == (3,)
    assert (model.unknown(probs, distance) == model.file.unknown.flags(probs, distance)).all()
    preds = model.to_predictions(probs, top_k=2, distance=distance)
    assert [p.species for p in preds] == [model.classes[i] for i in probs.argmax(1)]
    assert all(len(p.top_k) == 2 for p in preds)


def test_a_replaced_onnx_file_is_refused(exported_model, tmp_path):
    copy = tmp_path / "m"
    shutil.copytree(exported_model, copy)
    (copy / "model.onnx").write_bytes(b"not the exported graph")
    with pytest.raises(SeedlingsError, match="sha256"):
        Model(copy, backend="onnx")
    with pytest.raises(SeedlingsError, match="no model.int8.onnx; run `seedlings export` --precision int8"):
        Model(exported_model, precision="int8")


def test_expand_inputs_lists_a_folders_images_sorted(tmp_path):
    from PIL import Image

    for name in ("b.png", "a.png", ".hidden.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    assert [label for _, label in expand_inputs(tmp_path)] == [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert expand_inputs(b"bytes") == [(b"bytes", None)]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match="folder holds no images"):
        expand_inputs(tmp_path / "empty")


def test_the_latency_bench_times_each_model_in_turn(exported_model):
    """bench/latency.py: one line per model with its input size, its median and its ratio to the first."""
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "latency.py"
    done = subprocess.run([sys.executable, str(bench), str(exported_model), str(exported_model), "--rounds", "2",
                           "--n", "3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0].startswith("CPU: ") and len(lines) == 3
    assert lines[1].startswith(f"1. {exported_model} (32 px): ") and "1.00× the first" in lines[1]
    assert lines[2].startswith(f"2. {exported_model} (32 px): ")
    assert all(line.count(", ") >= 2 and "ms median, fp32" in line for line in lines[1:])  # two rounds listed
