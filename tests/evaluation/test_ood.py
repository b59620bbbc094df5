from __future__ import annotations

import numpy as np

from seedlings.evaluation.ood import KINDS, generate, unknown_rates


def test_generated_probes_are_distinct_kinds():
    ood = generate(n_per_kind=3, size=64)
    assert set(ood) == set(KINDS)
    for arr in ood.values():
        assert arr.shape == (3, 64, 64, 3) and arr.dtype == np.uint8
    assert ood["flat"][0].reshape(-1, 3).std(axis=0).max() == 0 and ood["noise"][0].std() > 50


def test_unknown_rates_follow_the_threshold(exported_model):
    from seedlings import load_model

    model = load_model(exported_model)
    ood = generate(n_per_kind=2, size=model.spec.image_size)
    val = ood["noise"]
    rule = model.file.unknown  # what Model.unknown and unknown_rates both apply
    assert rule.distance_threshold is not None  # the trained fixture ships the feature-distance detector
    rule.threshold, rule.distance_threshold = 0.0, float("inf")  # accepts everything
    rates = unknown_rates(model, val, ood)
    assert rates["false_accept_all"] == 1.0 and rates["false_reject_validation"] == 0.0
    rule.threshold = 1.01  # rejects everything through the max probability alone
    rates = unknown_rates(model, val, ood)
    assert rates["false_accept_all"] == 0.0 and rates["false_reject_validation"] == 1.0
    assert rates["false_accept_distance"]["noise"] == 1.0  # the distance signal alone still accepts
    rule.threshold, rule.distance_threshold = 0.0, 0.0  # rejects everything through the distance
    rates = unknown_rates(model, val, ood)
    assert rates["false_accept_all"] == 0.0 and rates["false_accept_max_probability"]["noise"] == 1.0
    assert rates["false_accept_distance"]["noise"] == 0.0 and rates["false_reject_validation_distance"] == 1.0
