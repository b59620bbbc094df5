"""Several labelled folders as one data set: ``seedlings train --data BASE --data FEEDBACK``.

Each folder is prepared on its own (its own cache, reused while the folder does not change) and the
caches are joined without copying them. The rules (docs/architecture.md, CLI contract):

- Classes: the union of the folders' class folders, sorted as one folder's are; a species that only a
  later folder holds (a new one from field feedback) is a new class.
- File identity (split.json, val_predictions.csv, oof.csv): a file of the first folder is named relative
  to that folder, as in a single-folder run, so such runs are unchanged; a file of the folder at position
  K ≥ 1 of the --data list is named ``@K-NAME/`` + its path relative to that folder, NAME being the folder's
  own name (``@1-feedback/Charlock/1.png``). Unique when two folders hold ``Charlock/1.png`` or share a name,
  and the same for the same --data list.
- Duplicates: a photo (the same bytes, by SHA-1) that an earlier folder and a later one both hold is kept
  once, as the later folder's copy with the later folder's label: feedback corrects the base set, and one
  photo cannot land in both training and validation. Copies inside one folder are left as they are, as in
  a single-folder run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seedlings.data.cache import PreparedData, prepare
from seedlings.errors import SeedlingsError


class JoinedImages:
    """The images of several prepared caches as one array of rows, without copying them: what ``Subset``,
    the training loader and the predictors index (a row number, an array of them or a slice)."""

    def __init__(self, arrays: list[np.ndarray], part: np.ndarray, row: np.ndarray):
        self.arrays, self.part, self.row = arrays, np.asarray(part, np.int64), np.asarray(row, np.int64)
        self.shape = (len(self.part), *arrays[0].shape[1:])
        self.dtype, self.ndim = arrays[0].dtype, len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return self.arrays[self.part[index]][self.row[index]]
        rows = np.arange(len(self))[index]
        out = np.empty((len(rows), *self.shape[1:]), self.dtype)
        parts = self.part[rows]
        for k in np.unique(parts):
            mine = parts == k
            out[mine] = self.arrays[k][self.row[rows[mine]]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


def prefix(position: int, root: str | Path) -> str:
    """How the identities of the files of the folder at ``position`` of --data begin (module docstring)."""
    return "" if position == 0 else f"@{position}-{Path(root).resolve().name or 'data'}/"


def prepare_folders(roots: list[str | Path], image_size, interpolation: str = "bilinear",
                    cache_root: str | Path | None = None, bad_images: str = "skip",
                    progress: bool = True) -> PreparedData:
    """``prepare`` for one folder or several: each prepared on its own, then :func:`join`-ed."""
    several = {"min_classes": 1} if len(roots) > 1 else {}
    return join([prepare(root, image_size, interpolation, cache_root=cache_root, bad_images=bad_images,
                         progress=progress, **several) for root in roots])


def join(parts: list[PreparedData]) -> PreparedData:
    """One data set of several folders' prepared caches (the rules: module docstring). A single folder's
    is returned as it is."""
    if len(parts) == 1:
        return parts[0]
    _check_distinct(parts)
    classes = sorted(set().union(*(p.classes for p in parts)))
    if len(classes) < 2:
        raise SeedlingsError(f"--data {', '.join(str(p.root) for p in parts)}: together only one class folder "
                             f"('{classes[0]}'); a classifier needs at least 2 species, one sub-folder each")
    keep, duplicates = _latest_copies(parts)
    files, labels, part, row, sizes, sha1, bad, sources = [], [], [], [], [], [], [], []
    for k, (p, rows) in enumerate(zip(parts, keep)):
        pre, remap = prefix(k, p.root), np.asarray([classes.index(c) for c in p.classes], np.int64)
        files += [pre + p.files[r] for r in rows]
        labels.append(remap[p.labels[rows]])
        part += [k] * len(rows)
        row += rows
        sizes += [p.sizes[r] for r in rows]
        sha1 += [p.sha1[r] for r in rows]
        bad += [{**b, "path": pre + b["path"]} for b in p.bad]
        sources.append({"folder": Path(p.root).resolve().name, "prefix": pre, "images": len(rows),
                        "duplicates_dropped": len(p.files) - len(rows)})
    images = JoinedImages([p.images for p in parts], np.asarray(part), np.asarray(row))
    return PreparedData(root=parts[0].root, cache_dir=parts[0].cache_dir, classes=classes, files=files,
                        labels=np.concatenate(labels), images=images, sizes=sizes, bad=bad,
                        rebuilt=any(p.rebuilt for p in parts), sha1=sha1, sources=sources,
                        duplicates=_named(duplicates, parts))


def _check_distinct(parts: list[PreparedData]) -> None:
    seen: set[Path] = set()
    for p in parts:
        root = Path(p.root).resolve()
        if root in seen:
            raise SeedlingsError(f"--data {p.root}: given twice; name each folder once")
        seen.add(root)


def _latest_copies(parts: list[PreparedData]) -> tuple[list[list[int]], list[tuple]]:
    """Per folder, the rows kept; and each dropped copy as (folder, row, kept folder, kept row).

    Folders are read from the last one back: a photo's first copy seen there is the one kept, and a copy
    in an earlier folder is dropped. Copies within the folder that keeps a photo all stay."""
    kept_at: dict[str, tuple[int, int]] = {}
    keep: list[list[int]] = []
    dropped: list[tuple] = []
    for k in range(len(parts) - 1, -1, -1):
        p = parts[k]
        if len(p.sha1) != len(p.files):
            raise SeedlingsError(f"{p.cache_dir}: the prepared cache lacks the files' hashes; delete it to rebuild")
        rows = []
        for r, digest in enumerate(p.sha1):
            owner = kept_at.setdefault(digest, (k, r))
            if owner[0] == k:
                rows.append(r)
            else:
                dropped.append((k, r, *owner))
        keep.append(rows)
    return keep[::-1], dropped


def _named(dropped: list[tuple], parts: list[PreparedData]) -> list[dict]:
    """The dropped copies by identity and class, the copy kept beside each, in identity order."""
    def name(k: int, r: int) -> tuple[str, str]:
        p = parts[k]
        return prefix(k, p.root) + p.files[r], p.classes[int(p.labels[r])]

    out = []
    for k, r, kk, kr in dropped:
        (file, label), (kept, kept_label) = name(k, r), name(kk, kr)
        out.append({"file": file, "label": label, "kept": kept, "kept_label": kept_label})
    return sorted(out, key=lambda d: d["file"])


def duplicates_note(data: PreparedData) -> str | None:
    """One line for the log: how many photos of earlier folders were dropped for a later copy, and how many
    of those the later folder labels differently (with the first one as an example)."""
    if not data.duplicates:
        return None
    relabelled = [d for d in data.duplicates if d["label"] != d["kept_label"]]
    note = (f"--data: {len(data.duplicates)} photo(s) of an earlier folder are also in a later one (same bytes); "
            "each is kept once, as the later folder's copy")
    if relabelled:
        d = relabelled[0]
        note += (f"; {len(relabelled)} of them change their label to the later folder's (e.g. {d['file']}: "
                 f"{d['label']} → {d['kept_label']} as {d['kept']})")
    return note
