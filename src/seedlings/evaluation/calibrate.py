"""Temperature scaling and the "unknown" threshold, both fitted on the validation split."""

from __future__ import annotations

import numpy as np

from seedlings.evaluation.metrics import (
    confusion_matrix,
    expected_calibration_error,
    fit_temperature,
    report_from_confusion,
    softmax,
    unknown_threshold,
)

UNKNOWN_FALSE_REJECT = 0.02


def calibration_from_logits(logits: np.ndarray, labels: np.ndarray) -> dict:
    t = fit_temperature(logits, labels) if len(labels) else 1.0
    before = expected_calibration_error(softmax(logits), labels) if len(labels) else 0.0
    probs = softmax(logits, t)
    after = expected_calibration_error(probs, labels) if len(labels) else 0.0
    thr = unknown_threshold(probs.max(axis=1), UNKNOWN_FALSE_REJECT) if len(labels) else 0.0
    return {"calibration": {"method": "temperature", "temperature": t, "ece_before": before, "ece_after": after,
                            "fitted_on": "validation", "n": int(len(labels))},
            "unknown": {"method": "max_probability", "threshold": thr,
                        "target_false_reject_validation": UNKNOWN_FALSE_REJECT,
                        "false_reject_validation": float((probs.max(axis=1) < thr).mean()) if len(labels) else 0.0}}


def calibrate_run(model, val_set, spec, classes) -> tuple[dict, dict]:
    """Fit on validation logits of the best weights; also return their evaluation report."""
    from seedlings.training.loop import predict_logits

    logits = predict_logits(model, val_set.images, val_set.rows, spec)
    labels = val_set.labels[val_set.rows]
    calib = calibration_from_logits(logits, labels)
    pred = logits.argmax(axis=1) if len(labels) else np.zeros(0, int)
    report = report_from_confusion(confusion_matrix(labels, pred, len(classes)), classes)
    report["split"] = "validation"
    return calib, report
