"""The feature-distance "not a seedling" detector: fitted numbers, the torch module, the shipped files."""

from __future__ import annotations

import json

import numpy as np
import torch

from seedlings.training import novelty


def _clusters(rng, n=200, dim=8, classes=3):
    centres = rng.normal(0, 5, (classes, dim))
    labels = rng.integers(0, classes, n)
    return centres[labels] + rng.normal(0, 1, (n, dim)), labels, centres


def test_distance_is_small_near_a_class_and_large_far_from_all():
    rng = np.random.default_rng(0)
    feats, labels, true_centres = _clusters(rng)
    centres, whiten = novelty.fit(feats, labels, 3)
    near = distances_of(centres, whiten, true_centres + rng.normal(0, 1, true_centres.shape))
    far = distances_of(centres, whiten, rng.normal(0, 1, (3, 8)) + 40)
    assert near.max() < 30 < far.min()  # χ²(8) has mean 8; 40 units away is hundreds


def distances_of(centres, whiten, feats):
    return novelty.distances(centres, whiten, feats)


def test_whitening_gives_the_mahalanobis_distance():
    rng = np.random.default_rng(1)
    feats, labels, _ = _clusters(rng, n=500, dim=4, classes=2)
    centres, whiten = novelty.fit(feats, labels, 2)
    x = rng.normal(0, 3, (5, 4))
    means = np.stack([feats[labels == c].mean(0) for c in range(2)])
    resid = feats - means[labels]
    cov = resid.T @ resid / (len(resid) - 1)
    cov = (1 - novelty.SHRINK) * cov + novelty.SHRINK * np.trace(cov) / 4 * np.eye(4)
    inv = np.linalg.inv(cov)
    want = np.min([np.einsum("nd,de,ne->n", x - m, inv, x - m) for m in means], axis=0)
    assert np.allclose(novelty.distances(centres, whiten, x), want, rtol=1e-6)


def test_a_class_without_training_images_is_never_the_nearest():
    rng = np.random.default_rng(2)
    feats, labels, _ = _clusters(rng, classes=2)
    centres, whiten = novelty.fit(feats, labels, 3)  # class 2 has no images
    assert np.isfinite(centres).all()
    d_all = ((feats @ whiten)[:, None, :] - centres[None]) ** 2
    assert (d_all.sum(-1).argmin(1) != 2).all()


def test_the_module_returns_the_models_logits_and_the_numpy_distance():
    from seedlings.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet10t", 3).eval()
    rng = np.random.default_rng(3)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        feats = novelty.pooled_features(model, x).double().numpy()
    labels = np.array([0, 0, 1, 1, 2, 2])
    centres, whiten = novelty.fit(np.concatenate([feats, feats + rng.normal(0, 0.1, feats.shape)]),
                                  np.concatenate([labels, labels]), 3)
    wrapped = novelty.WithDistance(model, torch.from_numpy(centres), torch.from_numpy(whiten)).eval()
    with torch.no_grad():
        logits, dist = wrapped(x)
        assert torch.allclose(logits, model(x), atol=1e-5)
    want = novelty.distances(centres, whiten, feats)
    assert np.allclose(dist.numpy(), want, rtol=1e-3, atol=1e-2)


def test_training_and_export_ship_the_detector(trained_run, exported_model):
    import onnxruntime as ort

    from seedlings import load_model

    meta = json.loads((trained_run / "model.json").read_text())
    assert (trained_run / novelty.NOVELTY_FILE).is_file() and novelty.NOVELTY_FILE in meta["files"]
    assert meta["unknown"]["method"] == "max_probability+feature_distance"
    assert meta["unknown"]["distance_threshold"] > 0
    outputs = [o.name for o in ort.InferenceSession(str(exported_model / "model.onnx")).get_outputs()]
    assert outputs == ["logits", "distance"]
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    onnx_model, torch_model = load_model(exported_model), load_model(trained_run)
    (p1, d1), (p2, d2) = onnx_model.assess(images), torch_model.assess(images)
    assert np.allclose(p1, p2, atol=1e-4) and np.allclose(d1, d2, rtol=1e-3)
    onnx_model.distance_threshold = float(d1.min()) - 1  # every image is far: all unknown
    onnx_model.threshold = 0.0
    assert all(p.unknown for p in onnx_model.predict(list(images)))
    onnx_model.distance_threshold = float(d1.max()) + 1
    assert not any(p.unknown for p in onnx_model.predict(list(images)))


def test_export_fits_the_detector_for_a_run_trained_before_it(trained_run, tmp_path):
    """Older runs have no detector: export fits it from the run's own data and split, and the run
    folder itself then loads (torch backend) with the same distances as the exported ONNX model."""
    import shutil

    from seedlings import load_model
    from seedlings.export.onnx import export_run

    run = tmp_path / "old-run"
    shutil.copytree(trained_run, run)
    (run / novelty.NOVELTY_FILE).unlink()
    meta = json.loads((run / "model.json").read_text())
    meta["unknown"] = {k: v for k, v in meta["unknown"].items() if not k.startswith("distance")}
    meta["files"].pop(novelty.NOVELTY_FILE)
    (run / "model.json").write_text(json.dumps(meta))
    logs = []
    out = export_run(run, tmp_path / "model", log=logs.append)
    assert any("fitted the feature-distance detector" in m for m in logs)
    assert (run / novelty.NOVELTY_FILE).is_file()
    images = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    from_run, exported = load_model(run), load_model(out)
    assert from_run.backend_name == "torch" and exported.backend_name == "onnx"
    assert np.allclose(from_run.assess(images)[1], exported.assess(images)[1], rtol=1e-3)
