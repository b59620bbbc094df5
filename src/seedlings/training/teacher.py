"""Soft labels from out-of-fold predictions: ``seedlings train --teacher OUT/oof.csv`` (knowledge distillation).

Each training image's target becomes (1 − α)·one-hot(label) + α·p, where p is the image's row of the teacher
file: the calibrated probabilities of the fold model that did not train on it (``train --folds K`` writes
them, training/folds.py). A free teacher: no second network runs while the student trains.

The file is read once, checked against the run (classes by name in any order, a row for every training image,
the same labels, probabilities that are probabilities) and held as one array in the prepared cache's row
order, so each batch carries its rows the way it carries its labels (data/torchdata.CachedImages). Its sha256
goes into every checkpoint and model.json: ``--resume`` refuses a teacher file that changed under the run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seedlings.data import Subset
from seedlings.errors import SeedlingsError

FIXED = ("file", "true", "predicted")  # the columns that are not classes (predicted: oof.csv only)
SUM_TOLERANCE = 1e-3  # the files hold 6 significant digits; a row is renormalised once it passes
HOW_TO_MAKE = ("the oof.csv that `seedlings train --folds K --out OUT` writes (OUT/oof.csv), made on the same "
               "--data folders in the same order")


@dataclass(frozen=True)
class Teacher:
    """The checked teacher file: its identity and one probability row per cache row, in the run's class order."""

    path: str
    sha256: str
    probs: np.ndarray  # float32, rows of the run's whole prepared data (zeros where the file has none)
    rows: int  # rows in the file
    used: int  # training images it gives a soft label (all of them)

    def record(self, weight: float) -> dict:
        """model.json's ``training.teacher``."""
        return {"file": self.path, "sha256": self.sha256, "weight": weight, "rows": self.rows,
                "training_images": self.used}


def read_teacher(path: str | Path, classes: list[str], train_set: Subset) -> Teacher:
    """The teacher file ``path`` checked against the run's ``classes`` and training images; SeedlingsError with
    the file, the line and what to do for anything that does not fit."""
    where = f"--teacher {path}"
    raw = _read_bytes(Path(path), where)
    reader = csv.reader(io.StringIO(_decode(raw, where), newline=""))
    header = _header(reader, where)
    columns = _class_columns(header, classes, where)
    table = _rows(reader, header, columns, where)
    probs = _align(table, classes, train_set, where)
    return Teacher(path=str(path), sha256=hashlib.sha256(raw).hexdigest(), probs=probs, rows=len(table),
                   used=len(train_set.rows))


def check_readable(path: str | Path) -> None:
    """Before the data is prepared (minutes on a cold cache): a teacher file that is missing, a folder or empty
    stops the run at once; its contents are checked against the run once the split is known."""
    _read_bytes(Path(path), f"--teacher {path}", limit=4096)  # the header is in there; the rest is read later


def check_resumed(info: dict, teacher: Teacher | None, run: str | Path) -> None:
    """A resumed run distils from the same bytes it started with (the checkpoint's ``teacher_sha256``), or from
    no teacher when it started without one: soft labels that change mid-run are another run."""
    was, now = info.get("teacher_sha256"), teacher.sha256 if teacher else None
    if was == now:
        return
    if was is None:
        raise SeedlingsError(f"--resume: {run} was trained without --teacher; resume it without one, or start a "
                             "new run in another --out")
    if now is None:
        raise SeedlingsError(f"--resume: {run} was trained with a teacher (sha256 {was[:12]}…); resume with the "
                             "same --teacher file, or start a new run in another --out")
    raise SeedlingsError(f"--resume: --teacher {teacher.path} changed since {run} started (sha256 {now[:12]}…, "
                         f"was {was[:12]}…); put the original file back, or start a new run in another --out")


# -- reading -----------------------------------------------------------------------------------------------

def _read_bytes(path: Path, where: str, limit: int = -1) -> bytes:
    """The file's bytes (its first ``limit`` only, when given: enough to tell it is there and not empty)."""
    if path.is_dir():
        hint = f" (e.g. {path / 'oof.csv'})" if (path / "oof.csv").is_file() else ""
        raise SeedlingsError(f"{where}: is a folder; give the CSV file itself{hint}")
    try:
        with open(path, "rb") as f:
            raw = f.read(limit)
    except FileNotFoundError:
        raise SeedlingsError(f"{where}: no such file; give {HOW_TO_MAKE}") from None
    except OSError as exc:
        raise SeedlingsError(f"{where}: cannot be read ({exc.strerror or exc})") from exc
    if not raw.strip():
        raise SeedlingsError(f"{where}: the file is empty; give {HOW_TO_MAKE} (rerunning the command writes it "
                             "again from the finished folds)")
    return raw


def _decode(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SeedlingsError(f"{where}: not a CSV text file (byte {exc.start} is not UTF-8); give {HOW_TO_MAKE}") \
            from None


def _header(reader, where: str) -> list[str]:
    try:
        header = next(reader, [])
    except csv.Error as exc:
        raise SeedlingsError(f"{where}: line 1 is not valid CSV ({exc}); give {HOW_TO_MAKE}") from None
    if [h.strip() for h in header[:2]] != ["file", "true"]:
        shown = ",".join(header)[:80]
        raise SeedlingsError(f"{where}: not a predictions CSV: its header is {shown!r}, expected file,true"
                             f"[,predicted],<one column per class>; give {HOW_TO_MAKE}")
    return [h.strip() for h in header]


def _class_columns(header: list[str], classes: list[str], where: str) -> list[int]:
    """The column of each class of the run, in the run's order, by name; other, missing or repeated columns are
    refused."""
    names = header[3:] if len(header) > 2 and header[2] == "predicted" else header[2:]
    first = len(header) - len(names)
    repeated = sorted({n for n in names if names.count(n) > 1 or n in FIXED})
    extra = [n for n in names if n not in classes and n not in repeated]
    missing = [c for c in classes if c not in names]
    problems = ([f"column(s) {', '.join(repeated)} appear twice"] if repeated else []) + \
               ([f"column(s) {', '.join(extra)} are not classes of this run"] if extra else []) + \
               ([f"class(es) {', '.join(missing)} of this run have no column"] if missing else [])
    if problems:
        raise SeedlingsError(f"{where}: {'; '.join(problems)} (the run's classes: {', '.join(classes)}); the teacher "
                             "must be a model of the same classes, one column each, matched by name in any order")
    return [first + names.index(c) for c in classes]


@dataclass
class _Row:
    line: int
    true: str
    probs: np.ndarray  # in the run's class order, summing to 1


def _rows(reader, header: list[str], order: list[int], where: str) -> dict[str, _Row]:
    """Every data row by its file identity, each checked, its probabilities taken from the columns ``order``
    (the run's classes); the line numbers are the file's own."""
    table: dict[str, _Row] = {}
    try:
        for fields in reader:
            line = reader.line_num
            if not fields or fields == [""]:
                continue
            if len(fields) != len(header):
                raise SeedlingsError(f"{where}: line {line} has {len(fields)} fields, the header {len(header)}; "
                                     f"the file is damaged; give {HOW_TO_MAKE}")
            file = fields[0]
            if file in table:
                raise SeedlingsError(f"{where}: line {line}: {file} is also on line {table[file].line}; one row per "
                                     "image (a file joined from several oof.csv? use one run's)")
            table[file] = _Row(line, fields[1], _probabilities(fields, order, f"{where}: line {line} ({file})"))
    except csv.Error as exc:
        raise SeedlingsError(f"{where}: line {reader.line_num} is not valid CSV ({exc}); give {HOW_TO_MAKE}") \
            from None
    return table


def _probabilities(fields: list[str], order: list[int], where: str) -> np.ndarray:
    try:
        p = [float(fields[i]) for i in order]
    except ValueError as exc:
        raise SeedlingsError(f"{where}: a probability is not a number ({exc})") from None
    if not all(math.isfinite(x) and x >= 0 for x in p):
        raise SeedlingsError(f"{where}: probabilities must be finite and ≥ 0, got {', '.join(map(str, p))}")
    total = math.fsum(p)
    if abs(total - 1) > SUM_TOLERANCE:
        raise SeedlingsError(f"{where}: probabilities sum to {total:.6g}, not 1 (± {SUM_TOLERANCE:g}); the "
                             "teacher's classes must be all of its columns")
    return np.asarray(p, dtype=np.float64) / total


def _align(table: dict[str, _Row], classes: list[str], train_set: Subset, where: str) -> np.ndarray:
    """One float32 row per cache row of the run's data: the file's row for each training image (all must have
    one, with the same label); the rest zeros. Validation images need none."""
    files = train_set.files
    probs = np.zeros((len(train_set.labels), len(classes)), dtype=np.float32)
    missing = [files[r] for r in train_set.rows if files[r] not in table]
    if missing:
        raise SeedlingsError(f"{where}: no row for {len(missing)} of the {len(train_set.rows)} training images "
                             f"(first: {', '.join(missing[:3])}); the teacher must cover every image the run "
                             f"trains on: give {HOW_TO_MAKE} (a later folder's files are named @K-NAME/…)")
    for r in train_set.rows:
        row, label = table[files[r]], classes[int(train_set.labels[r])]
        if row.true != label:
            raise SeedlingsError(f"{where}: line {row.line}: {files[r]} is labelled {row.true!r} there but "
                                 f"{label!r} in --data; this teacher was made for another labelling: run the folds "
                                 "again on this data (`seedlings train --folds K`) and use their oof.csv")
        probs[r] = row.probs
    return probs
