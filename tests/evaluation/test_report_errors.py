"""The misclassified-images outputs of evaluate, from a hand-made report (no model needed)."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image
from tests.helpers import synthetic_image

from seedlings.evaluation.metrics import confusion_matrix
from seedlings.evaluation.report import misclassified, write_errors, write_plots

CLASSES = ["Black-grass", "Charlock", "Maize"]


def _report(root, probs, labels, files):
    probs, labels = np.asarray(probs, float), np.asarray(labels)
    return {"classes": CLASSES, "data": str(root), "_probs": probs, "_labels": labels, "_files": files,
            "_unknown": probs.max(axis=1) < 0.5,
            "confusion_matrix": confusion_matrix(labels, probs.argmax(axis=1), len(CLASSES)).tolist()}


def test_errors_are_listed_most_confident_first_and_drawn_even_if_one_file_is_gone(tmp_path):
    rng = np.random.default_rng(0)
    for i, name in enumerate(CLASSES):
        (tmp_path / "data" / name).mkdir(parents=True)
        synthetic_image(i, rng).save(tmp_path / "data" / name / "a.png")
    files = ["Black-grass/a.png", "Charlock/a.png", "Maize/a.png", "Maize/gone.png"]
    report = _report(tmp_path / "data", [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.2, 0.45, 0.35]],
                     [0, 1, 2, 2], files)

    wrong = misclassified(report)
    assert [(w["file"], w["predicted"], w["unknown"]) for w in wrong] == [
        ("Charlock/a.png", "Black-grass", False), ("Maize/gone.png", "Charlock", True)]
    assert write_errors(report, tmp_path / "errors.csv") == 2
    with open(tmp_path / "errors.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["file", "true", "predicted", "confidence", "unknown"],
                    ["Charlock/a.png", "Charlock", "Black-grass", "0.6000", "false"],
                    ["Maize/gone.png", "Maize", "Charlock", "0.4500", "true"]]

    written = write_plots(report, tmp_path / "plots")  # the missing file gets a "cannot read" cell
    assert tmp_path / "plots" / "errors.png" in written
    with Image.open(tmp_path / "plots" / "errors.png") as sheet:
        assert sheet.width > 200

    right = _report(tmp_path / "data", [[0.9, 0.05, 0.05]], [0], files[:1])
    assert write_errors(right, tmp_path / "none.csv") == 0
    assert (tmp_path / "none.csv").read_text() == "file,true,predicted,confidence,unknown\n"
    written = write_plots(right, tmp_path / "plots")  # no errors: the earlier sheet must not stay behind
    assert not (tmp_path / "plots" / "errors.png").exists() and len(written) == 2
