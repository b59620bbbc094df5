"""evaluation/plots.py: PNG figures written atomically, without pyplot's global state."""

from __future__ import annotations

import json

import numpy as np

from seedlings.evaluation.plots import plot_confusion, plot_curves, plot_reliability, plot_run

PNG = b"\x89PNG"


def test_each_plot_writes_a_png(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.1 / e, "train_acc": 0.5, "val_acc": 0.6,
             "val_f1_micro": 0.6, "val_f1_macro": 0.5} for e in (1, 2, 3)]
    plot_curves(rows, tmp_path / "curves.png")
    plot_confusion([[3, 1], [0, 4]], ["a", "b"], tmp_path / "cm.png")
    probs = np.random.default_rng(0).dirichlet([1, 1], 50)
    plot_reliability(probs, probs.argmax(1), tmp_path / "rel.png")
    for name in ("curves.png", "cm.png", "rel.png"):
        assert (tmp_path / name).read_bytes()[:4] == PNG
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_run(tmp_path, ["a", "b"], {"confusion_matrix": [[1, 0], [0, 1]]})
    assert (tmp_path / "curves.png").read_bytes()[:4] == PNG and (tmp_path / "confusion_matrix.png").exists()
