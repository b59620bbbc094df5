"""`train --init MODEL_DIR`: start from a seedlings model (a run, or an exported graph with BatchNorm folded);
the classes it shares with the new list keep their classifier rows."""

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
    assert model.get_classifier().out_features == 4 and record["classifier"] == "replaced (12 → 4 classes)"
    assert record["classes_new"] == ["a", "b", "c", "d"] and not record["classes_kept"]
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


@pytest.mark.parametrize("initial", ["trained_run", "exported_model"])
def test_shared_classes_keep_their_rows_wherever_they_move_and_new_ones_start_small(initial, request):
    """Initial classes [A, B, C], new list [C, A, D]: before any step, C's and A's weight and bias rows are
    the initial ones at their new positions (so are their logits), D's row is new, B's is gone, every other
    tensor is the initial model's; model.json's ``init`` names them. From a run's weights and from an
    exported graph alike."""
    model_dir = request.getfixturevalue(initial)
    old = json.loads((model_dir / "model.json").read_text())["classes"]
    a, b, c = old
    create = lambda n: create_model("resnet10t", n)  # noqa: E731
    x = torch.from_numpy(normalize(_images(16, 32), PreprocessSpec(image_size=32)))
    reference, record = load_init(model_dir, create, old, [x])
    assert record["classifier"] == "kept"
    model, record = load_init(model_dir, create, [c, a, "Common Poppy"], [x])

    was, now = reference.get_classifier(), model.get_classifier()
    assert now.out_features == 3
    assert torch.equal(now.weight[0], was.weight[2]) and torch.equal(now.bias[0], was.bias[2])
    assert torch.equal(now.weight[1], was.weight[0]) and torch.equal(now.bias[1], was.bias[0])
    assert not any(torch.allclose(now.weight[2], row) for row in was.weight)
    assert 0 < now.weight[2].std() < 0.02 and torch.allclose(now.bias[2], was.bias.mean())
    head = {k for k in model.state_dict() if k.startswith("fc.")}
    assert head == {"fc.weight", "fc.bias"}
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in model.state_dict().items() if k not in head)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x)[:, :2], reference.eval()(x)[:, [2, 0]], rtol=0, atol=1e-6)

    assert record["classifier"] == f"kept 2 of 3 classes; new: Common Poppy; dropped: {b}"
    assert (record["classes_kept"], record["classes_new"], record["classes_dropped"]) == ([c, a], ["Common Poppy"],
                                                                                           [b])
    assert "N(0, 0.01²)" in record["new_rows"]


def test_the_same_classes_in_another_order_keep_every_row(trained_run):
    create = lambda n: create_model("resnet10t", n)  # noqa: E731
    old = json.loads((trained_run / "model.json").read_text())["classes"]
    reference, _ = load_init(trained_run, create, old, [])
    model, record = load_init(trained_run, create, old[::-1], [])
    assert torch.equal(model.get_classifier().weight, reference.get_classifier().weight.flip(0))
    assert record["classifier"] == "kept 3 of 3 classes (reordered)" and "new_rows" not in record


@pytest.mark.slow
def test_train_init_from_exported_model_with_another_class_set(tmp_path, exported_model):
    """An exported 3-class model fine-tuned on 2 of its classes and a new one: model.json says where from and
    which classes it kept; calibration and the "not a seedling" detector are fitted for the new classes."""
    from safetensors.torch import load_file

    from seedlings.training.fit import train

    classes = [SYNTH_CLASSES[2], SYNTH_CLASSES[0], "Charlock"]
    data = make_dataset(tmp_path / "three", per_class=12, classes=classes)
    run = train(data=str(data), out=str(tmp_path / "run"), init=str(exported_model), epochs=1, min_steps=0,
                image_size=32, batch_size=8, threads=1, progress=False)
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == sorted(classes) and meta["backbone"] == "resnet10t"
    assert meta["init"]["kind"] == "model" and meta["init"]["from"].startswith("model.onnx")
    assert meta["init"]["classifier"] == f"kept 2 of 3 classes; new: Charlock; dropped: {SYNTH_CLASSES[1]}"
    assert meta["init"]["classes_new"] == ["Charlock"]
    assert meta["calibration"]["method"] == "temperature" and "threshold" in meta["unknown"]
    centres = [v for k, v in load_file(str(run / "novelty.safetensors")).items() if k.endswith("centres")]
    assert len(centres) == 1 and centres[0].shape[0] == 3


def test_a_wrapped_backbone_carries_its_rows_too():
    """Space-to-depth wraps timm's network (its classifier is ``net.fc``, and it has no ``reset_classifier``)."""
    from seedlings.models.init_from import carry_over

    source, target = create_model("resnet10t_s2d", 2), create_model("resnet10t_s2d", 3)
    target.load_state_dict(carry_over(source, target, ["a", "b"], ["b", "new", "a"], "here"))
    was, now = source.get_classifier(), target.get_classifier()
    assert torch.equal(now.weight[[0, 2]], was.weight[[1, 0]]) and torch.equal(now.bias[[0, 2]], was.bias[[1, 0]])
    assert torch.equal(target.net.conv1[0].weight, source.net.conv1[0].weight)
