from __future__ import annotations

import numpy as np

from seedlings.evaluation.metrics import (
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    mcnemar,
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


def test_mcnemar_counts_only_the_images_the_two_models_disagree_on():
    assert mcnemar(0, 0) == 1.0 and mcnemar(5, 5) == 1.0
    assert np.isclose(mcnemar(9, 11), 0.8238, atol=1e-4)  # 2 × P(Binomial(20, ½) ≤ 9)
    assert np.isclose(mcnemar(0, 6), 2 / 64) and mcnemar(0, 6) == mcnemar(6, 0)
    assert mcnemar(2, 14) < 0.01 < mcnemar(3, 13) < 0.05 < mcnemar(4, 12)  # 16 disagreements: what is uneven enough
