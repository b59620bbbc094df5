"""Classification metrics and calibration as pure numpy functions."""

from __future__ import annotations

import math

import numpy as np

from seedlings.artifact import softmax  # the model file's calibration applies it; metrics use the same one

__all__ = ["softmax", "confusion_matrix", "report_from_confusion", "expected_calibration_error", "nll",
           "fit_temperature", "unknown_threshold", "mcnemar"]


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, int), np.asarray(y_pred, int)), 1)
    return cm


def report_from_confusion(cm: np.ndarray, classes: list[str]) -> dict:
    """accuracy, micro/macro F1, per-class precision/recall/F1/support from a confusion matrix."""
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    n = int(cm.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    accuracy = float(tp.sum() / n) if n else 0.0
    per_class = {c: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                     "support": int(support[i])} for i, c in enumerate(classes)}
    return {"n": n, "accuracy": accuracy,
            "f1_micro": accuracy,  # single-label multi-class: micro-F1 equals accuracy
            "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
            "per_class": per_class, "confusion_matrix": cm.tolist(), "classes": list(classes)}


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        mask = (conf > lo) & (conf <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - conf[mask].mean())
    return float(ece)


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)
    return float(-np.log(np.clip(p[np.arange(len(labels)), labels], 1e-12, 1)).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising validation NLL (coarse log grid, then a fine one)."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 121))
    best = min(grid, key=lambda t: nll(logits, labels, t))
    fine = np.linspace(best * 0.9, best * 1.1, 41)
    return float(min(fine, key=lambda t: nll(logits, labels, t)))


def unknown_threshold(max_probs: np.ndarray, false_reject: float) -> float:
    """Max-probability threshold that rejects ``false_reject`` of in-distribution validation images."""
    return float(np.quantile(max_probs, false_reject)) if len(max_probs) else 0.0


def mcnemar(only_a_right: int, only_b_right: int) -> float:
    """Exact two-sided McNemar p-value for two classifiers scored on the same images.

    Only the images exactly one of them gets right say anything about which is better; under "equally
    good" each of those is a fair coin. The p-value is the chance of a split at least this uneven."""
    n, k = only_a_right + only_b_right, min(only_a_right, only_b_right)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
