"""models/ensemble.py: several networks as one, whose softmax is the mean of the members' probabilities."""

from __future__ import annotations

import torch

from seedlings.models import create_model
from seedlings.models.ensemble import Ensemble, features_and_logits


def test_the_ensemble_averages_probabilities_and_concatenates_features():
    torch.manual_seed(0)
    members = [create_model("resnet10t", 3).eval() for _ in range(2)]
    ensemble = Ensemble(members).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = torch.stack([m(x).softmax(1) for m in members]).mean(0)
        assert torch.allclose(ensemble(x).softmax(1), want, atol=1e-6)
        feats, logits = features_and_logits(ensemble, x)
        one = features_and_logits(members[0], x)[0]
    assert feats.shape == (4, 2 * one.shape[1]) and torch.allclose(feats[:, :one.shape[1]], one)
