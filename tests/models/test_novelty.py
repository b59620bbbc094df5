"""The feature-distance "not a seedling" detector: fitted numbers, the torch module, the shipped files."""

from __future__ import annotations

import numpy as np
import torch

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
