"""artifact.py: model.json as one typed object; every bad field is refused with a message that names it."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from seedlings.artifact import Calibration, ModelFile, ModelFileError, UnknownRule
from seedlings.preprocess import PreprocessSpec

GOOD = {
    "format": 1, "name": "seedlings-resnet10t", "version": "2026.01.01.0000", "backbone": "resnet10t",
    "timm_name": "resnet10t", "image_size": 64, "classes": ["Black-grass", "Charlock"],
    "preprocess": {"image_size": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                   "interpolation": "bilinear", "resize": "shorter_side_center_crop", "layout": "NCHW"},
    "calibration": {"method": "temperature", "temperature": 1.5, "n": 10},
    "unknown": {"method": "max_probability+feature_distance", "threshold": 0.6, "distance_threshold": 900.0,
                "false_reject_validation": 0.02},
    "files": {"model.onnx": {"sha256": "ab" * 32, "bytes": 10}},
    "init": {"kind": "scratch"},
    "metrics": {"f1_micro": 0.9}, "training": {"epochs": 3}, "created": "2026-01-01T00:00:00+00:00",
}


def changed(path: str, value) -> dict:
    """GOOD with the field at dotted ``path`` set to ``value`` (``...`` deletes it)."""
    d = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    target = d
    for key in parents:
        target = target[key]
    if value is ...:
        del target[last]
    else:
        target[last] = value
    return d


@pytest.mark.parametrize("path, value, names", [
    ("format", 2, "model format 2"),
    ("format", ..., "model format None"),
    ("classes", ..., "lacks 'classes'"),
    ("preprocess", ..., "lacks 'preprocess'"),
    ("backbone", ..., "lacks 'backbone'"),
    ("backbone", "", "backbone"),
    ("name", 3, "name"),
    ("classes", [], "classes"),
    ("classes", ["a", "a"], "classes: names repeat (a)"),
    ("classes", ["a", 1], "classes"),
    ("preprocess", "64px", "preprocess: expected a JSON object"),
    ("preprocess.image_size", 4, "preprocess.image_size"),
    ("preprocess.image_size", 64.0, "preprocess.image_size"),
    ("preprocess.mean", [0.5, 0.5], "preprocess.mean"),
    ("preprocess.std", [0.2, 0.2, 0.0], "preprocess.std[2]"),
    ("preprocess.interpolation", "cubic", "preprocess.interpolation"),
    ("image_size", 128, "image_size 128 differs from preprocess.image_size 64"),
    ("calibration.temperature", 0, "calibration.temperature"),
    ("calibration.temperature", "hot", "calibration.temperature"),
    ("calibration", [], "calibration: expected a JSON object"),
    ("unknown.threshold", 1.5, "unknown.threshold"),
    ("unknown.threshold", True, "unknown.threshold"),
    ("unknown.distance_threshold", -1, "unknown.distance_threshold"),
    ("unknown.method", 7, "unknown.method"),
    ("files.model.onnx", ..., None),  # an empty file list is allowed (checked when a file is loaded)
    ("files", {"../model.onnx": {"sha256": "ab" * 32}}, "'../model.onnx' is not a plain file name"),
    ("files", {"model.onnx": {"sha256": "abc"}}, "files.model.onnx: lacks a sha256"),
    ("files", {"model.onnx": {"sha256": "ab" * 32, "bytes": -1}}, "files.model.onnx.bytes"),
    ("init", "imagenet", "init: expected a JSON object"),
])
def test_each_bad_field_is_refused_naming_it(tmp_path, path, value, names):
    if path == "files.model.onnx":
        d = copy.deepcopy(GOOD)
        d["files"] = {}
        assert ModelFile.from_dict(d).files == {}
        return
    (tmp_path / "model.json").write_text(json.dumps(changed(path, value)))
    with pytest.raises(ModelFileError) as err:
        ModelFile.load(tmp_path)
    assert names in str(err.value) and str(tmp_path / "model.json") in str(err.value)


def test_unreadable_files_say_what_to_do(tmp_path):
    with pytest.raises(ModelFileError, match="no such file; pass a model folder"):
        ModelFile.load(tmp_path)
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON .line 1.*re-export"):
        ModelFile.load(tmp_path)
    (tmp_path / "model.json").write_text("[]")
    with pytest.raises(ModelFileError, match="expected a JSON object, got list"):
        ModelFile.load(tmp_path)


def test_round_trip_keeps_every_field(tmp_path):
    model = ModelFile.from_dict(GOOD)
    model.save(tmp_path)
    again = ModelFile.load(tmp_path)
    assert again == model and again.to_dict() == model.to_dict()
    assert json.loads((tmp_path / "model.json").read_text()) == GOOD  # nothing added, dropped or changed
    assert again.image_size == 64 and again.metrics == {"f1_micro": 0.9} and again.get("created") == GOOD["created"]
    assert again.unknown.extra == {"false_reject_validation": 0.02} and again.calibration.extra == {"n": 10}


def test_save_refuses_what_load_would_refuse(tmp_path):
    model = ModelFile(name="m", backbone="resnet10t", classes=["a", "b"], preprocess=PreprocessSpec(image_size=64))
    model.unknown.threshold = 2.0
    with pytest.raises(ModelFileError, match="unknown.threshold"):
        model.save(tmp_path)
    assert not (tmp_path / "model.json").exists()


def test_files_are_verified_by_sha256(tmp_path):
    model = ModelFile(name="m", backbone="resnet10t", classes=["a", "b"], preprocess=PreprocessSpec(image_size=64))
    (tmp_path / "model.onnx").write_bytes(b"weights")
    model.record_file(tmp_path, "model.onnx")
    assert model.files["model.onnx"].bytes == 7
    assert model.verify_file(tmp_path, "model.onnx") == tmp_path / "model.onnx"
    (tmp_path / "model.onnx").write_bytes(b"replaced")
    with pytest.raises(ModelFileError, match="sha256 .* does not match model.json.*Refusing to load"):
        model.verify_file(tmp_path, "model.onnx")
    (tmp_path / "extra.onnx").write_bytes(b"x")
    with pytest.raises(ModelFileError, match="not listed in model.json 'files'"):
        model.verify_file(tmp_path, "extra.onnx")
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(ModelFileError, match="listed in model.json but missing"):
        model.verify_file(tmp_path, "model.onnx")


def test_the_unknown_rule_flags_either_signal():
    probs = np.array([[0.9, 0.1], [0.55, 0.45], [0.95, 0.05]])
    distance = np.array([10.0, 10.0, 500.0])
    rule = UnknownRule(threshold=0.6, distance_threshold=100.0)
    unsure, far = rule.signals(probs, distance)
    assert unsure.tolist() == [False, True, False] and far.tolist() == [False, False, True]
    assert rule.flags(probs, distance).tolist() == [False, True, True]
    assert rule.flags(probs).tolist() == [False, True, False]  # a model without the distance output
    assert UnknownRule(threshold=0.6).signals(probs, distance)[1] is None
    assert rule.flags(np.zeros((0, 2)), np.zeros(0)).tolist() == []


def test_calibration_divides_the_logits_by_its_temperature():
    logits = np.array([[2.0, 0.0]])
    p = Calibration(temperature=2.0).probabilities(logits)
    assert np.allclose(p, np.exp([1.0, 0.0]) / np.exp([1.0, 0.0]).sum())
