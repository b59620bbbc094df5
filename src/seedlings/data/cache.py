"""The prepared cache: every image decoded and resized once into one memory-mappable array.

Layout of a cache folder::

    images.npy      uint8 N × S × S × 3, rows in manifest order
    manifest.json   classes, files, labels, original sizes, sha1 of bytes, the source files'
                    sizes and mtimes (to notice changes), problems found

It is built in a temporary folder and renamed into place, so an interrupted build
(Ctrl-C, kill -9) leaves nothing that looks complete.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seedlings import __version__
from seedlings.data.index import DatasetIndex, index_folder
from seedlings.errors import ImageError, SeedlingsError, UsageError
from seedlings.fileio import atomic_write_json, read_json
from seedlings.images import open_image
from seedlings.preprocess import IMAGE_SIZES, PreprocessSpec, resize_square
from seedlings.progress import bar

CACHE_FORMAT = 1
BAD_IMAGE_POLICIES = ("skip", "fail")


@dataclass
class ScanResult:
    path: str
    size: tuple[int, int] | None
    sha1: str | None
    array: np.ndarray | None
    code: str | None = None
    reason: str | None = None


@dataclass
class PreparedData:
    root: Path
    cache_dir: Path
    classes: list[str]
    files: list[str]
    labels: np.ndarray
    images: np.ndarray  # memory-mapped uint8 N×S×S×3
    sizes: list[tuple[int, int]]
    bad: list[dict]
    rebuilt: bool = False
    sha1: list[str] = field(default_factory=list)  # of each file's bytes: duplicates across --data folders
    sources: list[dict] | None = None  # several --data folders joined (data/sources.py): each one's name and prefix
    duplicates: list[dict] = field(default_factory=list)  # photos of an earlier folder dropped for a later copy

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def subset(self, paths: list[str]) -> np.ndarray:
        """Row indices of the given relative paths (those still present)."""
        pos = {p: i for i, p in enumerate(self.files)}
        return np.asarray([pos[p] for p in paths if p in pos], dtype=np.int64)


def default_cache_root() -> Path:
    env = os.environ.get("SEEDLINGS_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seedlings"


def cache_dir_for(root: Path, image_size: int, interpolation: str, cache_root: Path | None) -> Path:
    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
    name = f"{root.resolve().name or 'data'}-{key}-{image_size}px-{interpolation}"
    return Path(cache_root or default_cache_root()) / name


def scan_one(root: str, rel: str, image_size: int | None, interpolation: str) -> ScanResult:
    """Read, hash and decode one file; resize it when ``image_size`` is given."""
    path = Path(root) / rel
    try:
        data = path.read_bytes()
        img = open_image(data, name=str(path))
    except ImageError as exc:
        return ScanResult(rel, None, None, None, exc.code, exc.reason)
    except OSError as exc:
        return ScanResult(rel, None, None, None, "unreadable", str(exc))
    arr = resize_square(img, image_size, interpolation) if image_size else None
    return ScanResult(rel, img.size, hashlib.sha1(data).hexdigest(), arr)


def _scan_chunk(args) -> list[ScanResult]:
    root, rels, image_size, interpolation = args
    return [scan_one(root, rel, image_size, interpolation) for rel in rels]


def scan(index: DatasetIndex, image_size: int | None, interpolation: str = "bilinear",
         workers: int | None = None, progress: bool = True, description: str = "Reading images"):
    """Yield ScanResults in index order, decoding in parallel processes."""
    workers = workers or min(8, os.cpu_count() or 1)
    chunk = 64
    jobs = [(str(index.root), index.files[i:i + chunk], image_size, interpolation)
            for i in range(0, len(index.files), chunk)]
    with bar(total=len(index.files), description=description, enabled=progress) as advance:
        if workers <= 1 or len(jobs) <= 1:
            results = map(_scan_chunk, jobs)
            for part in results:
                advance(len(part))
                yield from part
            return
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(_scan_chunk, jobs):
                advance(len(part))
                yield from part


def prepare(root: str | Path, image_size: int | PreprocessSpec, interpolation: str = "bilinear",
            cache_root: str | Path | None = None, bad_images: str = "skip", progress: bool = True,
            force: bool = False, min_classes: int = 2) -> PreparedData:
    """Return the prepared cache of ``root`` at ``image_size``, building it if absent or stale.

    ``image_size`` is a model's PreprocessSpec (its size and interpolation; a run's config builds it, a
    model's model.json holds it) or a size in pixels with ``interpolation`` (`data prepare --image-size`,
    whose default is config.TrainConfig.image_size): a cache at another size is another cache.
    ``min_classes`` 1: a folder joined with others (data/sources.py) may hold a single species."""
    if isinstance(image_size, PreprocessSpec):
        image_size, interpolation = image_size.image_size, image_size.interpolation
    if bad_images not in BAD_IMAGE_POLICIES:
        raise UsageError(f"--bad-images {bad_images!r}: choose one of {', '.join(BAD_IMAGE_POLICIES)}")
    if not IMAGE_SIZES[0] <= image_size <= IMAGE_SIZES[1]:
        raise UsageError(f"--image-size {image_size}: choose a size between {IMAGE_SIZES[0]} and {IMAGE_SIZES[1]} "
                         "pixels")
    index = index_folder(root, min_classes)
    cache_dir = cache_dir_for(index.root, image_size, interpolation, Path(cache_root) if cache_root else None)
    stats = index.stats()
    if not force:
        data = _load_if_fresh(cache_dir, index, stats, image_size, interpolation)
        if data is not None:
            _enforce_policy(data.bad, bad_images)
            return data
    _build(index, stats, cache_dir, image_size, interpolation, bad_images, progress)
    data = _load_if_fresh(cache_dir, index, stats, image_size, interpolation)
    if data is None:
        raise SeedlingsError(f"{cache_dir}: the cache changed while it was being built; run again")
    data.rebuilt = True
    return data


def _enforce_policy(bad: list[dict], policy: str) -> None:
    if bad and policy == "fail":
        lines = "\n".join(f"  {b['path']}: {b['reason']}" for b in bad[:50])
        more = f"\n  … and {len(bad) - 50} more" if len(bad) > 50 else ""
        raise SeedlingsError(
            f"{len(bad)} unusable image(s):\n{lines}{more}\n"
            "fix or remove them, or pass --bad-images skip to leave them out")


def _build(index, stats, cache_dir: Path, image_size, interpolation, bad_images, progress) -> None:
    cache_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(cache_dir)
    tmp = cache_dir.with_name(f"{cache_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _write_arrays(index, stats, tmp, image_size, interpolation, progress)
        _enforce_policy(manifest["bad"], bad_images)
        atomic_write_json(tmp / "manifest.json", manifest)
        _move_into_place(tmp, cache_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_arrays(index, stats, tmp: Path, image_size, interpolation, progress) -> dict:
    n = len(index.files)
    out = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8,
                                    shape=(n, image_size, image_size, 3))
    good, labels, sizes, hashes, bad = [], [], [], [], []
    label_of = dict(zip(index.files, index.labels))
    for res in scan(index, image_size, interpolation, progress=progress,
                    description=f"Preparing {index.root.name} at {image_size}px"):
        if res.array is None:
            bad.append({"path": res.path, "code": res.code, "reason": res.reason})
            continue
        out[len(good)] = res.array
        good.append(res.path)
        labels.append(label_of[res.path])
        sizes.append(list(res.size))
        hashes.append(res.sha1)
    out.flush()
    del out
    if len(good) < n:  # shrink the array to the good rows
        arr = np.load(tmp / "images.npy", mmap_mode="r")[: len(good)]
        np.save(tmp / "images.tmp.npy", np.ascontiguousarray(arr))
        del arr
        os.replace(tmp / "images.tmp.npy", tmp / "images.npy")
    if not good:
        raise SeedlingsError(f"{index.root}: none of the {n} images could be read")
    return {"format": CACHE_FORMAT, "seedlings_version": __version__, "root": str(index.root.resolve()),
            "image_size": image_size, "interpolation": interpolation, "classes": index.classes,
            "files": good, "labels": labels, "sizes": sizes, "sha1": hashes, "bad": bad,
            "source": {rel: [size, mtime] for rel, size, mtime in stats}}


def _move_into_place(tmp: Path, cache_dir: Path) -> None:
    """Rename the finished build into place, replacing a stale cache (or a concurrent twin's)."""
    try:
        if cache_dir.exists():
            shutil.rmtree(cache_dir, ignore_errors=True)
        os.replace(tmp, cache_dir)
    except OSError as exc:
        if not (cache_dir / "manifest.json").exists():
            raise SeedlingsError(f"{cache_dir}: cannot write the cache ({exc}); "
                                 "set SEEDLINGS_CACHE_DIR to a writable folder") from exc


def _remove_stale_temporaries(cache_dir: Path) -> None:
    for tmp in cache_dir.parent.glob(f"{cache_dir.name}.tmp-*"):
        pid = tmp.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load_if_fresh(cache_dir: Path, index, stats, image_size, interpolation) -> PreparedData | None:
    manifest_path = cache_dir / "manifest.json"
    if not manifest_path.is_file() or not (cache_dir / "images.npy").is_file():
        return None
    try:
        m = read_json(manifest_path, "cache manifest")
    except SeedlingsError:
        return None
    expected = {rel: [size, mtime] for rel, size, mtime in stats}
    if (m.get("format") != CACHE_FORMAT or m.get("image_size") != image_size
            or m.get("interpolation") != interpolation or m.get("classes") != index.classes
            or m.get("source") != expected):
        return None
    try:
        images = np.load(cache_dir / "images.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if images.shape != (len(m["files"]), image_size, image_size, 3) or len(m.get("sha1") or ()) != len(m["files"]):
        return None
    return PreparedData(root=index.root, cache_dir=cache_dir, classes=m["classes"], files=m["files"],
                        labels=np.asarray(m["labels"], dtype=np.int64), images=images,
                        sizes=[tuple(s) for s in m["sizes"]], bad=m["bad"], sha1=list(m["sha1"]))
