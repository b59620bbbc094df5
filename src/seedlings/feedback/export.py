"""`seedlings feedback export`: the stored corrections as a folder in the training layout.

Each photo gets the label most of its votes give it; a photo whose votes disagree is listed in
``conflicts.csv`` with every label's count (a tie goes to the label voted for most recently: the latest
correction is the best informed). ``not-a-seedling`` photos are not a species: they are counted and
listed, not exported as a class. ``--holdout F`` puts a stable share F of the photos (by their sha256,
so a photo never moves between exports) in ``test/`` and the rest in ``train/``: the held-out photos are
what `seedlings promote --test` compares models on, never seen in training.

The folder is built beside ``--out`` and renamed into place: a failed export leaves the last good one.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

from seedlings.errors import SeedlingsError
from seedlings.feedback.labels import NOT_A_SEEDLING, LabelError, folder_name
from seedlings.feedback.store import Store, safe_url
from seedlings.fileio import atomic_write_bytes

EXPORT_JSON = "export.json"
SUFFIX = {"PNG": ".png", "JPEG": ".jpg", "MPO": ".jpg", "WEBP": ".webp", "BMP": ".bmp", "DIB": ".bmp",
          "TIFF": ".tif", "GIF": ".gif"}


def resolve(votes: list) -> tuple[dict[str, dict], list[dict]]:
    """Per photo: its winning label, its vote counts and the latest prediction; and the conflicts."""
    by_image: dict[str, list] = defaultdict(list)
    for v in votes:
        by_image[v.sha256].append(v)
    decided, conflicts = {}, []
    for sha, rows in by_image.items():
        counts = Counter(r.label for r in rows)
        top = max(counts.values())
        latest = {r.label: r.id for r in rows}  # votes come oldest first: the last id per label
        label = max((lab for lab, n in counts.items() if n == top), key=lambda lab: latest[lab])
        last = rows[-1]
        decided[sha] = {"label": label, "votes": len(rows), "agreeing": top, "predicted": last.predicted,
                        "model_version": last.model_version, "first": rows[0].created, "last": last.created}
        if len(counts) > 1:
            conflicts.append({"sha256": sha, "chosen": label, "tie": list(counts.values()).count(top) > 1,
                              "counts": dict(counts.most_common())})
    return decided, conflicts


def holdout_of(sha256: str, fraction: float) -> bool:
    """True for the stable share ``fraction`` of photos that go to test/ (from the hash, not a draw)."""
    return int(sha256[:8], 16) / 0x1_0000_0000 < fraction


def export(store: Store, out: str | Path, since: datetime | None = None, min_votes: int = 1,
           holdout: float = 0.0, label_studio: bool = False, progress=None) -> dict:
    """Write the export folder; returns its summary (also written as export.json)."""
    out = Path(out)
    _check_target(out)
    decided, conflicts = resolve(store.votes(since))
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    rows, skipped = [], Counter()
    for sha, info in sorted(decided.items()):
        try:
            folder = folder_name(info["label"])
        except LabelError:  # not written by the service (it refuses such labels): never a path to follow
            skipped["unusable_label"] += 1
            continue
        if info["agreeing"] < min_votes:
            skipped["too_few_votes"] += 1
            continue
        if folder is None:
            skipped[NOT_A_SEEDLING] += 1
            continue
        data, fmt = store.image(sha)
        part = ("test" if holdout_of(sha, holdout) else "train") if holdout else ""
        rel = Path(part, folder, sha[:16] + SUFFIX.get(fmt, ".img"))
        atomic_write_bytes(tmp / rel, data)
        rows.append({"file": rel.as_posix(), "sha256": sha, **info})
        if progress:
            progress()
    summary = _summary(store, since, min_votes, holdout, rows, conflicts, skipped, decided)
    _write_lists(tmp, rows, conflicts, summary, decided)
    if label_studio:
        _write_label_studio(tmp, rows, sorted({r["label"] for r in rows}))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return summary


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_JSON).is_file())):
        raise SeedlingsError(f"--out {out}: exists and is not an earlier feedback export (no {EXPORT_JSON}); "
                             "choose a new folder (an earlier export is replaced whole)")


def _summary(store, since, min_votes, holdout, rows, conflicts, skipped, decided) -> dict:
    per_species = Counter(folder_name(r["label"]) for r in rows)
    return {
        "database": safe_url(store.url), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "since": since.isoformat() if since else None, "min_votes": min_votes, "holdout": holdout,
        "photos": len(decided), "exported": len(rows),
        "train": sum(1 for r in rows if not r["file"].startswith("test/")),
        "test": sum(1 for r in rows if r["file"].startswith("test/")),
        "species": dict(sorted(per_species.items())),
        "new_species": sorted({folder_name(r["label"]) for r in rows if r["label"].startswith("other:")}),
        "conflicts": len(conflicts), "skipped": dict(skipped),
    }


def _write_lists(root: Path, rows: list[dict], conflicts: list[dict], summary: dict, decided: dict) -> None:
    atomic_write_bytes(root / "labels.csv", _csv(
        ["file", "species", "label", "votes", "agreeing", "predicted", "model_version", "first_vote", "last_vote"],
        [[r["file"], folder_name(r["label"]), r["label"], r["votes"], r["agreeing"], r["predicted"] or "",
          r["model_version"] or "", _iso(r["first"]), _iso(r["last"])] for r in rows]))
    atomic_write_bytes(root / "conflicts.csv", _csv(
        ["sha256", "chosen", "tie", "votes"],
        [[c["sha256"], c["chosen"], c["tie"], json.dumps(c["counts"], ensure_ascii=False)] for c in conflicts]))
    not_seedlings = [sha for sha, info in sorted(decided.items()) if info["label"] == NOT_A_SEEDLING]
    atomic_write_bytes(root / "not-a-seedling.csv", _csv(["sha256"], [[s] for s in not_seedlings]))
    atomic_write_bytes(root / EXPORT_JSON, (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode())


def _write_label_studio(root: Path, rows: list[dict], labels: list[str]) -> None:
    """Label Studio's import format (tasks with the agreed label as an annotation and the model's answer as a
    prediction) and a labeling config with the species as choices, for an annotation team to review."""
    tasks = []
    for r in rows:
        task = {"data": {"image": f"/data/local-files/?d={r['file']}", "sha256": r["sha256"]},
                "annotations": [{"result": [_choice(folder_name(r["label"]))],
                                 "ground_truth": False}]}
        if r["predicted"]:
            task["predictions"] = [{"model_version": r["model_version"] or "", "result": [_choice(r["predicted"])]}]
        tasks.append(task)
    atomic_write_bytes(root / "label-studio.json", (json.dumps(tasks, indent=1, ensure_ascii=False) + "\n").encode())
    choices = "\n".join(f'    <Choice value="{_xml(folder_name(lab))}"/>' for lab in labels)
    atomic_write_bytes(root / "label-studio.xml", (
        '<View>\n  <Image name="image" value="$image"/>\n'
        f'  <Choices name="species" toName="image" choice="single" showInline="false">\n{choices}\n'
        '  </Choices>\n</View>\n').encode())


def _choice(value: str) -> dict:
    return {"from_name": "species", "to_name": "image", "type": "choices", "value": {"choices": [value]}}


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")


def _csv(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _iso(value) -> str:
    return value.isoformat(timespec="seconds") if value is not None else ""
