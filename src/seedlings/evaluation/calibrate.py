"""Temperature scaling and the "unknown" threshold, both fitted on the validation split."""

from __future__ import annotations

import numpy as np

from seedlings.artifact import Calibration, UnknownRule
from seedlings.evaluation.metrics import (
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    report_from_confusion,
    softmax,
    unknown_threshold,
)
from seedlings.models.novelty import PROBABILITY_FALSE_REJECT
from seedlings.models.predict import predict_logits

UNKNOWN_FALSE_REJECT = PROBABILITY_FALSE_REJECT  # the feature distance takes the rest of the 3 % (novelty.py)


def fit_calibration(logits: np.ndarray, labels: np.ndarray) -> tuple[Calibration, UnknownRule]:
    """The temperature minimising validation NLL, and the max-probability threshold that flags
    ``UNKNOWN_FALSE_REJECT`` of the validation images as unknown."""
    n = len(labels)
    if not n:  # nothing to fit on: no scaling, nothing flagged, and model.json says so
        return Calibration(1.0, {"fitted_on": "none", "n": 0}), UnknownRule(threshold=0.0, extra={"fitted_on": "none"})
    t = fit_temperature(logits, labels)
    probs = softmax(logits, t)
    thr = unknown_threshold(probs.max(axis=1), UNKNOWN_FALSE_REJECT)
    calibration = Calibration(t, {"ece_before": expected_calibration_error(softmax(logits), labels),
                                  "ece_after": expected_calibration_error(probs, labels),
                                  "fitted_on": "validation", "n": int(n)})
    rule = UnknownRule(threshold=thr, extra={
        "target_false_reject_validation": UNKNOWN_FALSE_REJECT,
        "false_reject_validation": float((probs.max(axis=1) < thr).mean())})
    return calibration, rule


def calibrate_run(model, val_set, spec, classes) -> tuple[Calibration, UnknownRule, dict, np.ndarray]:
    """Fit on validation logits of the shipped weights; also return their evaluation report and the logits."""
    logits = predict_logits(model, val_set.images, val_set.rows, spec)
    labels = val_set.labels[val_set.rows]
    calibration, rule = fit_calibration(logits, labels)
    pred = logits.argmax(axis=1) if len(labels) else np.zeros(0, int)
    report = report_from_confusion(confusion_matrix(labels, pred, len(classes)), classes)
    report["split"] = "validation"
    return calibration, rule, report, logits
