"""The Kaggle layout: ROOT/<Species name>/<image>; classes are the sorted folder names."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from seedlings.errors import SeedlingsError
from seedlings.images import is_image_name


@dataclass
class DatasetIndex:
    root: Path
    classes: list[str]
    files: list[str]  # relative to root, posix separators
    labels: list[int]
    ignored: list[str] = field(default_factory=list)  # non-image files, hidden files

    def __len__(self) -> int:
        return len(self.files)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(self.classes, 0)
        for label in self.labels:
            out[self.classes[label]] += 1
        return out

    def stats(self) -> list[tuple[str, int, int]]:
        """(relative path, size in bytes, mtime in ns) of each file: what a cache must match."""
        out = []
        for rel in self.files:
            try:
                st = os.stat(self.root / rel)
            except OSError as exc:
                link = " (a symbolic link to a missing file)" if os.path.islink(self.root / rel) else ""
                raise SeedlingsError(f"{self.root / rel}: cannot be read{link}: {exc.strerror}; fix or remove it, "
                                     "then run again") from None
            out.append((rel, st.st_size, st.st_mtime_ns))
        return out


def index_folder(root: str | Path, min_classes: int = 2) -> DatasetIndex:
    """List the images of a labelled folder, or explain what is wrong with it."""
    root = Path(root).expanduser()
    if not root.exists():
        raise SeedlingsError(f"{root}: no such folder; pass the folder that holds one sub-folder per species")
    if not root.is_dir():
        raise SeedlingsError(f"{root}: is a file; pass the folder that holds one sub-folder per species")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        loose = sum(1 for p in root.iterdir() if p.is_file() and is_image_name(p.name))
        found = f"{loose} image(s) directly in it but no" if loose else "no"
        raise SeedlingsError(
            f"{root}: has {found} class folders; expected ROOT/<Species name>/<image> "
            "(e.g. ROOT/Charlock/1.png), one sub-folder per species")
    classes = [d.name for d in class_dirs]
    files, labels, ignored = [], [], []
    for label, d in enumerate(class_dirs):
        found = _images_under(d, root, ignored)
        if not found:
            raise SeedlingsError(
                f"{d}: class folder '{d.name}' has no images (PNG, JPEG, WebP, BMP, TIFF); "
                "add images or remove the folder")
        files.extend(found)
        labels.extend([label] * len(found))
    if len(classes) < min_classes:
        raise SeedlingsError(
            f"{root}: only one class folder ('{classes[0]}'); a classifier needs at least {min_classes} "
            "species, one sub-folder each")
    return DatasetIndex(root=root, classes=classes, files=files, labels=labels, ignored=ignored)


def _images_under(folder: Path, root: Path, ignored: list[str]) -> list[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            rel = (Path(dirpath) / name).relative_to(root).as_posix()
            (found if is_image_name(name) else ignored).append(rel)
    return found
