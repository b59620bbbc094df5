"""Stratified, seeded train/validation split, stored by file path so it survives re-indexing."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seedlings.errors import SeedlingsError
from seedlings.fileio import atomic_write_json, read_json


@dataclass
class Subset:
    """Some rows of a prepared cache: what training, evaluation and export pass around."""

    images: np.ndarray  # the whole cache, N×S×S×3 uint8 (memory-mapped)
    labels: np.ndarray  # label of every cache row, in the model's class order
    rows: np.ndarray  # the rows in this subset
    files: list[str] | None = None  # relative path of every cache row (for per-image outputs)


@dataclass
class Split:
    train: list[str]
    val: list[str]
    seed: int
    val_fraction: float
    folds: int | None = None  # K-fold: this split validates on fold ``fold`` of ``folds``
    fold: int | None = None
    sources: list[dict] | None = None  # several --data folders (data/sources.py): each one's name and prefix

    def to_dict(self) -> dict:
        kfold = {"folds": self.folds, "fold": self.fold} if self.folds else {}
        sources = {"sources": self.sources} if self.sources else {}
        return {"seed": self.seed, "val_fraction": self.val_fraction, **kfold, **sources,
                "n_train": len(self.train), "n_val": len(self.val), "train": self.train, "val": self.val}

    def of_folder(self, root: str | Path, position: int | None = None) -> Split | None:
        """This split's share of the data folder ``root``, its files named relative to ``root``: the whole
        split of a single-folder run; of a run on several --data folders, the files of the folder at
        ``position`` of the list when known, else of the one folder named like ``root`` (None when none or
        several are: the Kaggle set and a feedback export may both be called ``train``)."""
        if not self.sources:
            return self
        name = Path(root).resolve().name
        found = ([s for s in self.sources if s["folder"] == name] if position is None
                 else self.sources[position:position + 1])
        if len(found) != 1:
            return None
        own = found[0]["prefix"]
        others = tuple(s["prefix"] for s in self.sources if s["prefix"] and s["prefix"] != own)

        def local(files: list[str]) -> list[str]:
            return [f[len(own):] for f in files if f.startswith(own) and not (others and f.startswith(others))]

        return dataclasses.replace(self, train=local(self.train), val=local(self.val), sources=None)

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Split:
        d = read_json(path, "split file")
        try:
            return cls(train=list(d["train"]), val=list(d["val"]), seed=int(d["seed"]),
                       val_fraction=float(d["val_fraction"]), folds=d.get("folds"), fold=d.get("fold"),
                       sources=d.get("sources"))
        except (KeyError, TypeError, ValueError) as exc:
            raise SeedlingsError(f"{path}: split file lacks {exc}; delete it to re-split") from exc


def stratified_split(files: list[str], labels: list[int], val_fraction: float = 0.15,
                     seed: int = 0) -> Split:
    """Per class, a seeded shuffle; round(n × fraction) images go to validation (≥ 1 if n ≥ 2)."""
    if not 0.0 <= val_fraction < 1.0:
        raise SeedlingsError(f"--val-fraction {val_fraction}: must be ≥ 0 and < 1 (e.g. 0.15)")
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    train, val = [], []
    for c in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == c)
        rng.shuffle(idx)
        n_val = int(round(len(idx) * val_fraction))
        if val_fraction > 0 and len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val.extend(files[i] for i in idx[:n_val])
        train.extend(files[i] for i in idx[n_val:])
    return Split(train=sorted(train), val=sorted(val), seed=seed, val_fraction=val_fraction)


def stratified_folds(files: list[str], labels: list[int], k: int, seed: int = 0) -> list[list[str]]:
    """``k`` disjoint folds covering every file, each class spread evenly: per class a seeded shuffle dealt
    round-robin, each class starting where the last one stopped, so fold sizes differ by at most one."""
    if k < 2:
        raise SeedlingsError(f"--folds {k}: must be at least 2")
    rng = np.random.default_rng(seed)
    labels_arr = np.asarray(labels)
    folds: list[list[str]] = [[] for _ in range(k)]
    start = 0
    for c in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == c)
        rng.shuffle(idx)
        for j, i in enumerate(idx):
            folds[(start + j) % k].append(files[i])
        start = (start + len(idx)) % k
    return [sorted(f) for f in folds]


def fold_split(files: list[str], labels: list[int], k: int, fold: int, seed: int = 0) -> Split:
    """Fold ``fold`` of :func:`stratified_folds` validates; the other K-1 train."""
    folds = stratified_folds(files, labels, k, seed)
    train = sorted(f for i, part in enumerate(folds) if i != fold for f in part)
    return Split(train=train, val=folds[fold], seed=seed, val_fraction=len(folds[fold]) / len(files),
                 folds=k, fold=fold)
