"""PNG plots: training curves and the confusion matrix (matplotlib, headless)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from seedlings.errors import ImageError
from seedlings.fileio import atomic_write
from seedlings.images import open_image, to_rgb


class _Figures:
    """pyplot's ``subplots`` without pyplot: no global backend switch, no figure registry to leak."""

    @staticmethod
    def subplots(nrows: int = 1, ncols: int = 1, figsize=(6, 4)):
        from matplotlib.figure import Figure  # lazy: matplotlib is the train extra (see figures())

        fig = Figure(figsize=figsize)
        axes = fig.subplots(nrows, ncols)
        return fig, axes


def figures():
    """What makes figures (``figures().subplots(...)``); ImportError without matplotlib (the train extra)."""
    import matplotlib.figure  # noqa: F401  lazy: the runs table and evaluate work without the train extra

    return _Figures


def save_png(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def plot_curves(rows: list[dict], path: Path) -> None:
    plt = figures()
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    axes[0].plot(epochs, [r["train_loss"] for r in rows], label="train")
    axes[0].plot(epochs, [r["val_loss"] for r in rows], label="validation")
    axes[0].set_title("loss")
    axes[1].plot(epochs, [r["train_acc"] for r in rows], label="train (augmented)")
    axes[1].plot(epochs, [r["val_acc"] for r in rows], label="validation")
    axes[1].set_title("accuracy")
    axes[2].plot(epochs, [r["val_f1_micro"] for r in rows], label="micro-F1")
    axes[2].plot(epochs, [r["val_f1_macro"] for r in rows], label="macro-F1")
    axes[2].set_title("validation F1")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    save_png(fig, path)


def plot_confusion(cm, classes: list[str], path: Path, title: str = "confusion matrix") -> None:
    plt = figures()
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(9, 8))
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Greens", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (n = {int(cm.sum())})")
    for i in range(len(classes)):
        for j in range(len(classes)):
            if cm[i, j]:
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                        color="white" if norm[i, j] > 0.6 else "black")
    save_png(fig, path)


def plot_run(run: Path, classes: list[str], report: dict) -> None:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    plot_curves(rows, run / "curves.png")
    plot_confusion(report["confusion_matrix"], classes, run / "confusion_matrix.png",
                   "validation confusion matrix")


def plot_reliability(probs, labels, path: Path, bins: int = 10) -> None:
    """Confidence vs accuracy per bin: a calibrated model follows the diagonal."""
    plt = figures()
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    centres, accs, counts = [], [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            centres.append((lo + hi) / 2)
            accs.append(correct[m].mean())
            counts.append(int(m.sum()))
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar(centres, accs, width=1 / bins * 0.9, alpha=0.7, label="accuracy in bin")
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability")
    ax.legend()
    save_png(fig, path)


def plot_errors(wrong: list[dict], root: Path, path: Path, limit: int = 48, columns: int = 8) -> None:
    """A contact sheet of misclassified images (``report.misclassified`` rows), each titled true → predicted."""
    plt = figures()
    shown = wrong[:limit]
    rows = -(-len(shown) // columns)
    cols = min(columns, len(shown))
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.3 * rows))
    axes = np.atleast_1d(axes).ravel()
    for ax, item in zip(axes, shown):
        try:
            img = to_rgb(open_image(root / item["file"]))
            img.thumbnail((160, 160))
            ax.imshow(np.asarray(img))
        except (OSError, ImageError) as exc:  # moved or changed since it was scored: say so, draw the rest
            ax.text(0.5, 0.5, f"cannot read:\n{type(exc).__name__}", ha="center", va="center", fontsize=7)
        flag = " ?" if item["unknown"] else ""
        ax.set_title(f"{item['true']}\n→ {item['predicted']} {item['confidence']:.2f}{flag}", fontsize=7)
    for ax in axes:
        ax.axis("off")
    more = f", the {limit} most confident shown" if len(wrong) > limit else ""
    fig.suptitle(f"misclassified: true → predicted, confidence (? = flagged unknown); {len(wrong)} images{more}",
                 fontsize=9)
    save_png(fig, path)
