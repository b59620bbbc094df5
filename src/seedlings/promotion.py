"""``seedlings promote``: a candidate model against the registry's current one on the same labelled photos.

The rule (docs/registry.md): the candidate becomes current when it is not worse overall (its micro-F1 on the test
photos is at least the current model's, i.e. it gets at least as many of them right) and no species' F1 drops by more
than ``max_class_drop``. The exact McNemar test says whether the overall difference is resolved by these photos; it is
printed and recorded beside the decision. A photo whose species a model does not know (a new species from feedback)
counts as an error for that model: it cannot name it. Both models run with ONNX Runtime (no torch); each photo is
decoded once and resized for each model's own preprocessing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from seedlings.data.index import index_folder
from seedlings.errors import ImageError
from seedlings.evaluation.metrics import confusion_matrix, mcnemar, report_from_confusion
from seedlings.images import open_image
from seedlings.inference import Model
from seedlings.preprocess import resize_square
from seedlings.progress import bar
from seedlings.registry import Registry
from seedlings.tables import print_table

DEFAULT_MAX_CLASS_DROP = 0.05
RESOLUTION = 0.05  # McNemar p under this: the photos resolve the difference; else "no difference"
_EPS = 1e-9  # F1 differences are floats: a drop equal to the margin is within it
_CHUNK = 64


@dataclass
class Photos:
    """Labelled photos from one or more folders in the training layout (one sub-folder per species)."""

    files: list[Path]
    truth: list[str]
    folders: list[str]  # folder names, for the record (no paths of this machine)


@dataclass
class Answers:
    """One model's predicted species for each photo of a test set."""

    version: str
    classes: list[str]
    predicted: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    version: str  # the candidate's version in the registry
    current: str | None  # the version it was compared with (current before)
    decision: str  # first | accepted | refused | unchanged (already current)
    switched: bool
    forced: bool = False
    failures: list[str] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    added: bool = False  # copied into the registry now (False: the same content was there)

    def to_dict(self) -> dict:
        return asdict(self)


def labelled_photos(folders: list[str | Path]) -> Photos:
    files, truth = [], []
    for folder in folders:
        index = index_folder(folder, min_classes=1)  # feedback photos may hold a single species
        files += [index.root / f for f in index.files]
        truth += [index.classes[label] for label in index.labels]
    return Photos(files, truth, [Path(f).name for f in folders])


def answer(models: list[Model], answers: list[Answers], photos: Photos,
           progress: bool = False) -> tuple[list[str], list[dict]]:
    """Fill each model's answers; returns the truth of the photos kept and those skipped (unreadable: skipped for
    every model, so both are scored on the same photos)."""
    truth, skipped = [], []
    with bar(len(photos.files), "Comparing", enabled=progress) as advance:
        for start in range(0, len(photos.files), _CHUNK):
            images = []
            for path, label in zip(photos.files[start:start + _CHUNK], photos.truth[start:start + _CHUNK]):
                try:
                    images.append(open_image(path, name=str(path)))
                    truth.append(label)
                except ImageError as exc:
                    skipped.append({"file": path.name, "error": exc.reason})
            for model, out in zip(models, answers):
                out.predicted += _predict(model, images)
            advance(min(_CHUNK, len(photos.files) - start))
    return truth, skipped


def _predict(model: Model, images: list) -> list[str]:
    if not images:
        return []
    spec = model.spec
    batch = np.stack([resize_square(img, spec.image_size, spec.interpolation) for img in images])
    return [model.classes[i] for i in model.probabilities(batch).argmax(axis=1)]


def compare(truth: list[str], candidate: Answers, current: Answers | None) -> dict:
    """The figures of the decision: micro/macro-F1 and per-species F1 of each model over the union of the species
    (the photos' and both models'), and the exact McNemar test on the photos only one of them gets right."""
    classes = sorted(set(truth) | set(candidate.classes) | set(current.classes if current else ()))
    figures = {"n": len(truth), "classes": classes, "support": {c: truth.count(c) for c in classes},
               "candidate": _scores(truth, candidate, classes)}
    if current is None:
        return figures
    cand_right = [p == t for p, t in zip(candidate.predicted, truth)]
    cur_right = [p == t for p, t in zip(current.predicted, truth)]
    only_cand = sum(a and not b for a, b in zip(cand_right, cur_right))
    only_cur = sum(b and not a for a, b in zip(cand_right, cur_right))
    figures["current"] = _scores(truth, current, classes)
    figures["mcnemar"] = {"only_candidate_right": only_cand, "only_current_right": only_cur,
                          "p": mcnemar(only_cand, only_cur)}
    return figures


def _scores(truth: list[str], answers: Answers, classes: list[str]) -> dict:
    pos = {c: i for i, c in enumerate(classes)}
    cm = confusion_matrix([pos[t] for t in truth], [pos[p] for p in answers.predicted], len(classes))
    report = report_from_confusion(cm, classes)
    return {"version": answers.version, "f1_micro": report["f1_micro"], "f1_macro": report["f1_macro"],
            "per_class": {c: report["per_class"][c]["f1"] for c in classes},
            "species_not_known": sorted(set(truth) - set(answers.classes))}


def decide(figures: dict, max_class_drop: float = DEFAULT_MAX_CLASS_DROP) -> tuple[str, list[str]]:
    """("first" | "accepted" | "refused", what failed)."""
    if "current" not in figures:
        return "first", []
    cand, cur, test = figures["candidate"], figures["current"], figures["mcnemar"]
    failures = []
    if cand["f1_micro"] < cur["f1_micro"]:
        failures.append(f"overall micro-F1 {cand['f1_micro']:.4f} is below the current model's {cur['f1_micro']:.4f} "
                        f"({test['only_current_right']} photo(s) only the current model gets right, "
                        f"{test['only_candidate_right']} only the candidate; exact McNemar p = {test['p']:.3g})")
    for c in figures["classes"]:
        drop = cur["per_class"][c] - cand["per_class"][c]
        if figures["support"][c] and drop > max_class_drop + _EPS:
            failures.append(f"{c}: F1 {cur['per_class'][c]:.3f} → {cand['per_class'][c]:.3f}, a drop of {drop:.3f} "
                            f"(more than --max-class-drop {max_class_drop:g})")
    return ("refused" if failures else "accepted"), failures


def score(registry: Registry, version: str, current: str | None, photos: Photos, progress: bool = False) -> dict:
    """Run the candidate (and the current model, if any) on the photos; the figures of :func:`compare`."""
    versions = [version] + ([current] if current else [])
    models = [Model(registry.version_dir(v), backend="onnx") for v in versions]
    answers = [Answers(v, list(m.classes)) for v, m in zip(versions, models)]
    truth, skipped = answer(models, answers, photos, progress)
    figures = compare(truth, answers[0], answers[1] if current else None)
    figures.update(test=photos.folders, skipped=skipped)
    return figures


def promote(registry: Registry, candidate: str | Path, tests: list[str | Path],
            max_class_drop: float = DEFAULT_MAX_CLASS_DROP, force: bool = False, reason: str | None = None,
            as_version: str | None = None, progress: bool = False) -> Outcome:
    """Copy the candidate into the registry, compare, and switch ``current`` when the rule (or ``force``) says so;
    every switch and every refusal is recorded in promotions.jsonl."""
    photos = labelled_photos(tests)  # a wrong --test folder is refused before anything is copied
    version, added = registry.add(candidate, as_version)
    current = registry.current()
    if current == version:
        return Outcome(version, current, "unchanged", switched=False, added=added)
    figures = score(registry, version, current, photos, progress)
    decision, failures = decide(figures, max_class_drop)
    figures["max_class_drop"] = max_class_drop
    outcome = Outcome(version, current, decision, switched=decision != "refused" or force,
                      forced=decision == "refused" and force, failures=failures, figures=figures, added=added)
    if outcome.switched:
        registry.switch(version, current, decision, forced=outcome.forced, reason=reason, figures=figures)
    else:
        registry.refuse(version, current, reason, figures)
    return outcome


# -- the terminal table -----------------------------------------------------------------------------
def print_outcome(outcome: Outcome, file=None) -> None:
    """Per species: test photos, F1 of both models and the difference; then overall micro-F1 and McNemar."""
    if outcome.decision == "unchanged":
        print(f"version {outcome.version} is already current; nothing to do", file=file)
        return
    figures = outcome.figures
    cur, cand = figures.get("current"), figures["candidate"]
    header = ["species", "photos", f"current {cur['version']}" if cur else "current", f"candidate {cand['version']}",
              "difference", ""]
    rows = [_row(c, figures, cur, cand) for c in figures["classes"]]
    rows.append(["overall micro-F1", figures["n"], _f(cur and cur["f1_micro"]), _f(cand["f1_micro"]),
                 _diff(cur and cur["f1_micro"], cand["f1_micro"]), ""])
    print_table(f"promote {cand['version']} on {', '.join(figures['test'])} ({figures['n']} photos"
                f"{', ' + str(len(figures['skipped'])) + ' unreadable skipped' if figures['skipped'] else ''})",
                header, rows, file=file)
    if cur:
        test = figures["mcnemar"]
        print(f"exact McNemar: {test['only_candidate_right']} photo(s) only the candidate gets right, "
              f"{test['only_current_right']} only the current model; p = {test['p']:.3g} "
              f"({_resolution(test)})", file=file)
    print(verdict(outcome), file=file)


def _row(c: str, figures: dict, cur: dict | None, cand: dict) -> list:
    note = []
    if cur and c in cur["species_not_known"]:
        note.append("new: the current model does not know it")
    if c in cand["species_not_known"]:
        note.append("the candidate does not know it")
    if not figures["support"][c]:
        return [c, 0, "—", "—", "—", "; ".join(note) or "no test photos"]
    drop = cur["per_class"][c] - cand["per_class"][c] if cur else 0.0
    if drop > figures["max_class_drop"] + _EPS:
        note.append(f"drop over {figures['max_class_drop']:g}")
    return [c, figures["support"][c], _f(cur and cur["per_class"][c]), _f(cand["per_class"][c]),
            _diff(cur and cur["per_class"][c], cand["per_class"][c]), "; ".join(note)]


def _f(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def _diff(cur, cand) -> str:
    return "—" if cur is None else f"{cand - cur:+.3f}"


def _resolution(test: dict) -> str:
    if test["p"] >= RESOLUTION:
        return f"no difference at this resolution (p ≥ {RESOLUTION:g})"
    better = test["only_candidate_right"] > test["only_current_right"]
    return f"the {'candidate' if better else 'current model'} is better"


def verdict(outcome: Outcome) -> str:
    if outcome.decision == "first":
        return f"the registry was empty: {outcome.version} is now current"
    if outcome.decision == "accepted":
        return f"accepted: {outcome.version} is now current (was {outcome.current})"
    if outcome.forced:
        return f"refused by the rule but forced: {outcome.version} is now current (was {outcome.current})"
    return f"refused: {outcome.current} stays current"
