"""export/onnx.py: the exported folder (parity, detector, float16 weights), its portable model.json, and the
run folder left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from seedlings.artifact import NOVELTY, ModelFile
from seedlings.errors import SeedlingsError
from seedlings.export.onnx import data_folder, export_run, portable, run_data


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_training_and_export_ship_the_detector(trained_run, exported_model):
    import onnxruntime as ort

    from seedlings import load_model

    meta = json.loads((trained_run / "model.json").read_text())
    assert (trained_run / NOVELTY).is_file() and NOVELTY in meta["files"]
    assert meta["unknown"]["method"] == "max_probability+mahalanobis+cosine"
    assert meta["unknown"]["distance_threshold"] > 0
    outputs = [o.name for o in ort.InferenceSession(str(exported_model / "model.onnx")).get_outputs()]
    assert outputs == ["logits", "distance"]
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    onnx_model, torch_model = load_model(exported_model), load_model(trained_run)
    (p1, d1), (p2, d2) = onnx_model.assess(images), torch_model.assess(images)
    assert np.allclose(p1, p2, atol=1e-4) and np.allclose(d1, d2, rtol=1e-3)
    rule = onnx_model.file.unknown
    rule.distance_threshold, rule.threshold = float(d1.min()) - 1, 0.0  # every image is far: all unknown
    assert all(p.unknown for p in onnx_model.predict(list(images)))
    rule.distance_threshold = float(d1.max()) + 1
    assert not any(p.unknown for p in onnx_model.predict(list(images)))


def test_exported_model_json_holds_no_absolute_path(exported_model, trained_run):
    meta = json.loads((exported_model / "model.json").read_text())
    assert not [s for s in _strings(meta) if s.startswith("/") or str(trained_run.parent) in s]
    assert (exported_model / meta["source_run"]).resolve() == trained_run.resolve()
    assert meta["training"]["data"] == Path(ModelFile.load(trained_run).training["data"]).name


def test_portable_keeps_runs_relative_and_names_other_paths(tmp_path):
    out = tmp_path / "runs" / "r1" / "model"
    got = portable({"source_run": str(tmp_path / "runs" / "r1"), "ensemble": {"members": [
        {"run": str(tmp_path / "runs" / "r2")}]}, "training": {"data": "/srv/data/train", "epochs": 3,
                                                             "command": "/usr/bin/seedlings train --data /srv/x"}}, out)
    assert got == {"source_run": "..", "ensemble": {"members": [{"run": "../../r2"}]},
                   "training": {"data": "train", "epochs": 3, "command": "seedlings train --data x"}}


def test_export_leaves_the_run_folder_as_it_was(trained_run, tmp_path):
    before = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    export_run(trained_run, tmp_path / "model", log=lambda m: None)
    after = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.is_file()}
    assert after.keys() == before.keys() and all(after[k] == before[k] for k in before)


def test_export_fits_the_detector_for_a_run_trained_before_it_only_when_asked(trained_run, tmp_path):
    """Older runs have no detector: export refuses them, saying how; with --fit-detector it fits one from the
    run's own data and split into the exported model only; the run folder keeps its model.json, gains no file."""
    from seedlings import load_model

    run = tmp_path / "old-run"
    shutil.copytree(trained_run, run)
    (run / NOVELTY).unlink()
    meta = json.loads((run / "model.json").read_text())
    meta["unknown"] = {k: v for k, v in meta["unknown"].items() if not k.startswith("distance")}
    meta["unknown"]["method"] = "max_probability"
    meta["files"].pop(NOVELTY)
    (run / "model.json").write_text(json.dumps(meta))
    before = (run / "model.json").read_bytes()
    logs = []
    with pytest.raises(SeedlingsError, match="--fit-detector"):
        export_run(run, tmp_path / "refused", log=logs.append)
    assert not (tmp_path / "refused" / "model.json").exists()
    out = export_run(run, tmp_path / "model", log=logs.append, fit_detector=True)
    assert any("fitted the feature-distance detector" in m for m in logs)
    assert (run / "model.json").read_bytes() == before and not (run / NOVELTY).exists()
    exported = load_model(out)
    assert exported.backend_name == "onnx" and exported.file.unknown.distance_threshold > 0
    assert exported.file.unknown.method == "max_probability+mahalanobis+cosine"
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert exported.assess(images)[1] is not None and load_model(run).assess(images)[1] is None


def test_the_run_data_is_found_from_its_config_when_model_json_names_no_folder(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    meta = json.loads((run / "model.json").read_text())
    data = meta["training"].pop("data")
    (run / "model.json").write_text(json.dumps(meta))
    model_file = ModelFile.load(run)
    assert data_folder(run, model_file) == data  # from config.yaml
    train_set, val_set = run_data(run, model_file)
    assert len(val_set.rows) == meta["metrics"]["n"] and len(train_set.rows) > len(val_set.rows)
    (run / "config.yaml").unlink()
    assert run_data(run, ModelFile.load(run)) == (None, None)


def test_half_weights_halve_the_file_and_keep_the_predictions(trained_run, exported_model, tmp_path):
    import onnx
    from onnx import TensorProto

    from seedlings import load_model

    out = export_run(trained_run, tmp_path / "half", half=True, log=lambda m: None)
    full, half = (exported_model / "model.onnx").stat().st_size, (out / "model.onnx").stat().st_size
    assert half < 0.55 * full
    big = [i for i in onnx.load(str(out / "model.onnx")).graph.initializer if np.prod(i.dims) >= 16]
    assert big and all(i.data_type == TensorProto.FLOAT16 for i in big)
    report = json.loads((out / "model.json").read_text())["export"]["half_weights"]
    assert report["max_abs_dprob_vs_float32_weights"] < 1e-2
    images = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    a, b = load_model(exported_model).assess(images), load_model(out).assess(images)
    assert np.abs(a[0] - b[0]).max() < 1e-2 and (a[0].argmax(1) == b[0].argmax(1)).all()


def test_a_folder_that_is_not_a_finished_run_is_refused(tmp_path):
    from seedlings.errors import SeedlingsError

    with pytest.raises(SeedlingsError, match="not a finished run folder"):
        export_run(tmp_path, tmp_path / "model", log=lambda m: None)
