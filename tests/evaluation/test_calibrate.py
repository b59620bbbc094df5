"""evaluation/calibrate.py: the temperature and the unknown threshold fitted on validation logits."""

from __future__ import annotations

import numpy as np

from seedlings.artifact import Calibration, UnknownRule
from seedlings.evaluation.calibrate import UNKNOWN_FALSE_REJECT, fit_calibration


def _overconfident(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    logits = rng.normal(0, 1, (n, 3))
    logits[np.arange(n), labels] += 1.0  # right about 60 % of the time…
    return logits * 8, labels  # …but sure of itself


def test_an_overconfident_model_gets_a_temperature_above_one_and_a_lower_ece():
    logits, labels = _overconfident()
    calibration, rule = fit_calibration(logits, labels)
    assert isinstance(calibration, Calibration) and isinstance(rule, UnknownRule)
    assert calibration.temperature > 2 and calibration.extra["ece_after"] < calibration.extra["ece_before"] / 2
    flagged = rule.flags(calibration.probabilities(logits)).mean()
    assert abs(flagged - UNKNOWN_FALSE_REJECT) < 0.01 and rule.method == "max_probability"


def test_the_fitted_values_survive_model_json():
    logits, labels = _overconfident(200)
    calibration, rule = fit_calibration(logits, labels)
    assert Calibration.from_dict(calibration.to_dict(), "c") == calibration
    assert UnknownRule.from_dict(rule.to_dict(), "u") == rule
    calibration, rule = fit_calibration(np.zeros((0, 3)), np.zeros(0, int))
    assert calibration.temperature == 1.0 and rule.threshold == 0.0
