from __future__ import annotations

import numpy as np

from seedlings.evaluation.metrics import (
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    report_from_confusion,
    softmax,
)


def test_report_matches_hand_computation():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    rep = report_from_confusion(confusion_matrix(y_true, y_pred, 3), ["a", "b", "c"])
    assert rep["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert rep["accuracy"] == rep["f1_micro"] == 4 / 6
    # a: p=1, r=2/3 → f1=0.8; b: p=1/2, r=1/2 → 0.5; c: p=1/2, r=1 → 2/3
    assert np.isclose(rep["per_class"]["a"]["f1"], 0.8)
    assert np.isclose(rep["per_class"]["c"]["precision"], 0.5)
    assert np.isclose(rep["f1_macro"], (0.8 + 0.5 + 2 / 3) / 3)
    assert rep["per_class"]["b"]["support"] == 2 and rep["n"] == 6


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    n, k = 4000, 5
    true_logits = rng.normal(0, 1.5, (n, k))
    labels = np.array([rng.choice(k, p=p) for p in softmax(true_logits)])
    t = fit_temperature(true_logits * 3.0, labels)  # a model 3× too confident
    assert 2.6 < t < 3.4
    before = expected_calibration_error(softmax(true_logits * 3.0), labels)
    after = expected_calibration_error(softmax(true_logits * 3.0, t), labels)
    assert after < before / 2
