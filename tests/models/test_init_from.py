"""`train --init MODEL_DIR`: start from an exported seedlings model (ONNX only, BatchNorm folded)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from tests.helpers import SYNTH_CLASSES, make_dataset

from seedlings.api import load_model
from seedlings.config import TrainConfig
from seedlings.errors import SeedlingsError
from seedlings.inference import DEFAULT_MODEL_DIR
from seedlings.models import create_model
from seedlings.models.init_from import load_init
from seedlings.preprocess import PreprocessSpec, normalize


def _images(n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_default_model_rebuilt_from_its_onnx_graph_predicts_the_same():
    served = load_model(None)
    spec = served.spec
    batches = [torch.from_numpy(normalize(_images(32, spec.image_size), spec))]
    model, record = load_init(DEFAULT_MODEL_DIR, lambda n: create_model(served.file.backbone, n), served.classes,
                              batches)
    images = _images(8, spec.image_size)
    with torch.no_grad():
        ours = model.eval()(torch.from_numpy(normalize(images, spec))).double().numpy()
    theirs = served.backend(normalize(images, spec))
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    assert record["classifier"] == "kept" and record["kind"] == "model"


def test_other_classes_replace_the_classifier_and_batchnorm_starts_calibrated():
    served = load_model(None)
    spec = served.spec
    x = torch.from_numpy(normalize(_images(64, spec.image_size), spec))
    model, record = load_init(DEFAULT_MODEL_DIR, lambda n: create_model(served.file.backbone, n),
                              ["a", "b", "c", "d"], [x])
    assert model.get_classifier().out_features == 4 and "12 → 4" in record["classifier"]
    with torch.no_grad():
        eval_feats = model.eval().forward_features(x)
        train_feats = model.train().forward_features(x)
    # with BatchNorm statistics measured on these images, training mode starts where eval mode is
    rel = (train_feats - eval_feats).abs().mean() / eval_feats.abs().mean()
    assert rel < 0.05, rel


def test_wrong_architecture_is_refused():
    spec = PreprocessSpec(image_size=64)
    x = torch.from_numpy(normalize(_images(4, 64), spec))
    with pytest.raises(SeedlingsError, match="convolutions in the graph|does not fit"):
        load_init(DEFAULT_MODEL_DIR, lambda n: create_model("resnet14t", n), ["a"], [x])


def test_init_implies_its_backbone_and_refuses_contradictions():
    backbone = load_model(None).file.backbone
    cfg = TrainConfig(data="d", out="o", init=str(DEFAULT_MODEL_DIR)).validate()
    assert cfg.model == backbone
    with pytest.raises(SeedlingsError, match=f"--init .* is a {backbone}; omit --model"):
        TrainConfig(data="d", out="o", model="resnet14t", init=str(DEFAULT_MODEL_DIR)).validate()
    with pytest.raises(SeedlingsError, match="cannot be combined with --pretrained"):
        TrainConfig(data="d", out="o", model="efficientnet_lite0", pretrained=True,
                    init=str(DEFAULT_MODEL_DIR)).validate()


@pytest.mark.slow
def test_train_init_from_exported_model_with_fewer_classes(tmp_path, exported_model):
    """An exported 3-class model fine-tuned on 2 classes: classifier replaced, model.json says where from."""
    from seedlings.training.fit import train

    data = make_dataset(tmp_path / "two", per_class=12, classes=SYNTH_CLASSES[:2])
    run = train(data=str(data), out=str(tmp_path / "run"), init=str(exported_model), epochs=1, image_size=32,
                batch_size=8, threads=1, progress=False)
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == SYNTH_CLASSES[:2] and meta["backbone"] == "resnet10t"
    assert meta["init"]["kind"] == "model" and "3 → 2" in meta["init"]["classifier"]
