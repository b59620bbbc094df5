"""evaluate(model, data) → report: the honest numbers for a model on a labelled folder."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from seedlings.artifact import SPLIT
from seedlings.data import Split, prepare
from seedlings.errors import SeedlingsError
from seedlings.evaluation.metrics import confusion_matrix, expected_calibration_error, report_from_confusion
from seedlings.evaluation.plots import plot_confusion, plot_errors, plot_reliability
from seedlings.fileio import atomic_write_text
from seedlings.progress import bar
from seedlings.tables import print_table


def _rows_to_score(model, data, all_images: bool) -> tuple[np.ndarray, str]:
    """A model evaluated on the data it was trained on scores its validation split only, unless asked.

    "The data it was trained on" is recognised by content, not by path, so a copied or remounted
    dataset is still recognised: every file of the run's split is present under the same name. A run
    on several --data folders is scored on the share of its split that came from the folder of this name.
    """
    found = _find_split(model)
    split = found.of_folder(data.root, _position(model, Path(data.root))) if found is not None else None
    present = set(data.files)
    same_data = split is not None and set(split.train) | set(split.val) <= present | _bad(data)
    if same_data and not all_images and not split.val:
        raise SeedlingsError(_no_held_out(model, data.root))
    if same_data and not all_images:
        return data.subset(split.val), "validation split of the run"
    if same_data:
        return np.arange(len(data.files)), "all images (including the run's training images)"
    if split is None and _trained_on(model, Path(data.root)):
        return np.arange(len(data.files)), ("all images (WARNING: this model was trained on this folder and "
                                            "its split is unknown; the numbers are optimistic)")
    return np.arange(len(data.files)), "all images"


def _no_held_out(model, root) -> str:
    """What to say when a model trained on every image of the folder is asked to score it."""
    metrics = model.file.metrics
    said = (f" Its reported accuracy is its recipe's out-of-fold micro-F1, {metrics['f1_micro']:.4f} on "
            f"{metrics['n']} images (model.json metrics, split \"out-of-fold\": each image scored by a fold model "
            f"that did not train on it)." if metrics.get("split") == "out-of-fold" else "")
    return (f"--data {root}: {model.dir} was trained on every image of this folder, so none is held out to "
            f"score it.{said} Score it on photos it did not train on, or add --all for figures on its training "
            f"images (optimistic).")


def _bad(data) -> set[str]:
    return {b["path"] for b in data.bad}


def _trained_on(model, root: Path) -> bool:
    """Whether ``root`` is (one of) the model's training data folder(s): by path in a run folder, by name in
    an exported model (which records no absolute path)."""
    trained_on = model.file.training.get("data") or []
    return any(Path(t).resolve() == root.resolve() if Path(t).is_absolute() else Path(t).name == root.resolve().name
               for t in ([trained_on] if isinstance(trained_on, str) else trained_on))


def _position(model, root: Path) -> int | None:
    """Which of a run's several --data folders ``root`` is, by path (None when not exactly one)."""
    trained_on = model.file.training.get("data")
    if not isinstance(trained_on, list):
        return None
    found = [k for k, folder in enumerate(trained_on) if Path(folder).resolve() == root.resolve()]
    return found[0] if len(found) == 1 else None


def _find_split(model):
    """The run's split.json: in the model folder, or in its source run (recorded relative to the folder)."""
    source_run = model.file.get("source_run")
    for folder in (model.dir, model.dir / source_run if source_run else None):
        if folder is not None and (folder / SPLIT).is_file():
            return Split.load(folder / SPLIT)
    return None


def evaluate(model, data_dir, all_images: bool = False, tta: bool = False, bad_images: str = "skip",
             progress: bool = True) -> dict:
    """Score ``model`` (an inference.Model) on a labelled folder; report keys in docs/architecture.md (CLI)."""
    data = prepare(data_dir, model.spec.image_size, model.spec.interpolation, bad_images=bad_images,
                   progress=progress)
    unknown = [c for c in data.classes if c not in model.classes]
    if unknown:
        raise SeedlingsError(f"--data {data_dir}: class folder(s) {', '.join(unknown)} are not species this model "
                             f"knows ({', '.join(model.classes)})")
    rows, scope = _rows_to_score(model, data, all_images)
    remap = np.asarray([model.classes.index(c) for c in data.classes])
    labels = remap[data.labels[rows]]
    probs, distance = _assess(model, data.images, rows, tta, progress)
    pred = probs.argmax(axis=1)
    flags = model.unknown(probs, distance) if len(labels) else np.zeros(0, bool)
    report = report_from_confusion(confusion_matrix(labels, pred, len(model.classes)), model.classes)
    report.update({"scope": scope, "data": str(data.root), "model": {"name": model.name, "version": model.version,
                   "dir": str(model.dir), "backend": model.backend_name}, "tta": tta,
                   "ece": expected_calibration_error(probs, labels) if len(labels) else 0.0,
                   "unknown_rate": float(flags.mean()) if len(labels) else 0.0,
                   "skipped_images": data.bad})
    report["_probs"], report["_labels"], report["_files"] = probs, labels, [data.files[r] for r in rows]
    report["_unknown"] = flags
    return report


def misclassified(report: dict) -> list[dict]:
    """The images the model got wrong, most confident first (the first ones are worth checking for wrong labels)."""
    probs, labels, classes = report["_probs"], report["_labels"], report["classes"]
    pred = probs.argmax(axis=1)
    wrong = np.nonzero(pred != labels)[0]
    wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")]
    return [{"file": report["_files"][i], "true": classes[labels[i]], "predicted": classes[pred[i]],
             "confidence": float(probs[i, pred[i]]), "unknown": bool(report["_unknown"][i])} for i in wrong]


def write_errors(report: dict, path: Path) -> int:
    """``file,true,predicted,confidence,unknown`` for each misclassified image; returns how many."""
    rows = misclassified(report)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "true", "predicted", "confidence", "unknown"])
    writer.writerows([r["file"], r["true"], r["predicted"], f"{r['confidence']:.4f}", str(r["unknown"]).lower()]
                     for r in rows)
    atomic_write_text(path, buf.getvalue())
    return len(rows)


def _assess(model, images, rows, tta, progress) -> tuple[np.ndarray, np.ndarray | None]:
    """Model.assess in chunks, to drive the progress bar."""
    chunk = 64
    probs, dists = [np.zeros((0, len(model.classes)))], []
    with bar(len(rows), "Evaluating", enabled=progress) as advance:
        for i in range(0, len(rows), chunk):
            p, d = model.assess(np.asarray(images[rows[i:i + chunk]]), tta=tta)
            probs.append(p)
            dists.append(d)
            advance(len(p))
    has_distance = bool(dists) and dists[0] is not None
    return np.concatenate(probs), (np.concatenate(dists) if has_distance else None)


def public(report: dict) -> dict:
    return {k: v for k, v in report.items() if not k.startswith("_")}


def print_report(report: dict) -> None:
    rows = [[c, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", m["support"]]
            for c, m in report["per_class"].items()]
    print_table(f"{report['model']['name']} on {report['data']} ({report['scope']}, n = {report['n']}"
                f"{', TTA' if report['tta'] else ''})", ["species", "precision", "recall", "F1", "support"], rows)
    print(f"accuracy {report['accuracy']:.4f}   micro-F1 {report['f1_micro']:.4f}   "
          f"macro-F1 {report['f1_macro']:.4f}   ECE {report['ece']:.4f}   unknown {report['unknown_rate']:.2%}")
    cm = np.asarray(report["confusion_matrix"])
    pairs = [(cm[i, j], report["classes"][i], report["classes"][j]) for i in range(len(cm)) for j in range(len(cm))
             if i != j and cm[i, j]]
    for n, t, p in sorted(pairs, reverse=True)[:5]:
        print(f"  {n} × {t} predicted as {p}")


def write_plots(report: dict, out: Path) -> list[Path]:
    """confusion_matrix.png, reliability.png and, when there are any, errors.png (the misclassified images)."""
    out.mkdir(parents=True, exist_ok=True)
    plot_confusion(report["confusion_matrix"], report["classes"], out / "confusion_matrix.png")
    plot_reliability(report["_probs"], report["_labels"], out / "reliability.png")
    written = [out / "confusion_matrix.png", out / "reliability.png"]
    wrong = misclassified(report)
    if wrong:
        plot_errors(wrong, Path(report["data"]), out / "errors.png")
        written.append(out / "errors.png")
    else:  # not an earlier evaluation's sheet left beside this one's plots
        (out / "errors.png").unlink(missing_ok=True)
    return written
