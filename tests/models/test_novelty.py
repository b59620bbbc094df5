"""The feature-distance "not a seedling" detector: fitted numbers, the torch module, the shipped files."""

from __future__ import annotations

import numpy as np
import torch

from seedlings.artifact import NOVELTY
from seedlings.models import novelty


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


def test_cosine_distance_catches_what_mahalanobis_misses():
    """A class that spreads widely along its own features (plants show them more or less strongly) makes
    Mahalanobis forgive a weak, unspecific activation of everything; its direction gives it away."""
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 400)
    strength = np.abs(rng.normal(3, 1.5, 400))
    feats = np.abs(rng.normal(0, 0.1, (400, 6)))
    feats[labels == 0, 0:2] += strength[labels == 0, None]
    feats[labels == 1, 2:4] += strength[labels == 1, None]
    probe = np.full((1, 6), 0.3)
    centres, whiten = novelty.fit(feats, labels, 2)
    directions = novelty.fit_directions(feats, labels, 2)
    maha, cos = novelty.distances(centres, whiten, feats), novelty.cosine_distances(directions, feats)
    assert novelty.distances(centres, whiten, probe)[0] < np.quantile(maha, 0.99)  # Mahalanobis lets it in
    assert novelty.cosine_distances(directions, probe)[0] > 2 * np.quantile(cos, 0.99)  # the cosine does not
    scales = np.array([np.quantile(maha, 0.99), np.quantile(cos, 0.99)])
    assert novelty.combined(centres, whiten, directions, scales, probe)[0] > 2  # nor does the larger of the two


def test_cosine_distance_is_zero_on_a_class_direction_and_ignores_scale():
    feats = np.array([[4.0, 0, 0], [9.0, 0, 0], [0, 1.0, 0], [0, 16.0, 0]])
    directions = novelty.fit_directions(feats, np.array([0, 0, 1, 1]), 3)  # class 2: no images
    assert np.allclose(directions, [[1, 0, 0], [0, 1, 0], [0, 0, 0]])
    got = novelty.cosine_distances(directions, np.array([[100.0, 0, 0], [0, 0, 5.0], [1.0, 1.0, 0]]))
    assert np.allclose(got, [0.0, 1.0, 1 - np.sqrt(0.5)])


def test_fitted_file_gives_the_larger_scaled_distance_in_the_graph(tmp_path):
    """fit_run → novelty.safetensors → wrap: the module's output is max(Mahalanobis / s₀, cosine / s₁) with
    the scales and threshold set on validation, and a file without ``directions`` keeps the old output."""
    from types import SimpleNamespace

    from seedlings.artifact import Calibration, UnknownRule
    from seedlings.models import create_model
    from seedlings.preprocess import PreprocessSpec

    torch.manual_seed(0)
    model = create_model("resnet10t", 3).eval()
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (140, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(140) % 3
    train = SimpleNamespace(images=images, labels=labels, rows=np.arange(40))
    val = SimpleNamespace(images=images, labels=labels, rows=np.arange(40, 140))
    spec = PreprocessSpec(image_size=32)
    rule = novelty.fit_run(model, train, val, spec, 3, tmp_path, calibration=Calibration(),
                           rule=UnknownRule(threshold=0.0))  # max probability flags nothing: 3 of 100 left
    info = rule.extra
    assert rule.method == "max_probability+mahalanobis+cosine" and rule.threshold == 0.0
    assert info["false_reject_validation_total"] == info["distance_false_reject_validation"] == 0.03
    wrapped = novelty.wrap(model, tmp_path / NOVELTY)
    feats = novelty.features(model, images, np.arange(40, 140), spec)
    with torch.no_grad():
        _, dist = wrapped(torch.from_numpy(np.stack([novelty_input(images[r], spec) for r in range(40, 140)])))
    from safetensors.numpy import load_file

    t = {k: v.astype(np.float64) for k, v in load_file(str(tmp_path / NOVELTY)).items()}
    want = novelty.combined(t["centres"], t["whiten"], t["directions"], t["scales"], feats)
    assert np.allclose(dist.numpy(), want, rtol=1e-3, atol=1e-3)
    assert np.isclose(np.sort(want)[-4], rule.distance_threshold, rtol=1e-3)  # 3 of 100 above it
    legacy = novelty.WithDistance(model, torch.from_numpy(t["centres"]), torch.from_numpy(t["whiten"])).eval()
    with torch.no_grad():
        _, old = legacy(torch.from_numpy(np.stack([novelty_input(images[r], spec) for r in range(40, 140)])))
    assert np.allclose(old.numpy(), novelty.distances(t["centres"], t["whiten"], feats), rtol=1e-3, atol=1e-2)


def test_the_distance_gets_what_max_probability_leaves_of_the_budget():
    val = np.arange(100, dtype=float)  # distances 0…99
    unsure = np.zeros(100, bool)
    assert novelty.budget_threshold(val, unsure, 0.03) == 96  # 97, 98, 99 above it
    unsure[[99, 10]] = True  # max probability already flags two (one of them also far)
    thr = novelty.budget_threshold(val, unsure, 0.03)
    assert (unsure | (val > thr)).sum() == 3 and thr == 97
    unsure[:5] = True  # more than the budget: the distance flags only what is further than every other image
    thr = novelty.budget_threshold(val, unsure, 0.03)
    assert not (val[~unsure] > thr).any()
    assert novelty.budget_threshold(np.zeros(0), np.zeros(0, bool)) == float("inf")


def novelty_input(image: np.ndarray, spec) -> np.ndarray:
    from seedlings.preprocess import normalize

    return normalize(image[None], spec)[0]
