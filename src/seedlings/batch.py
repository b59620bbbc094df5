"""Batch prediction over photo archives: Parquet parts, resumable, sharded, decoded in worker processes.

    seedlings predict ARCHIVE/ --out RESULTS/ [--shard I/N] [--workers W] [--part-size P]

* Files: every image under each PATH, named relative to that PATH (with several PATHs, prefixed by the
  PATH's own name), in sorted order.
* Shards: a file belongs to shard ``hash(name) mod N`` (SHA-256 of its relative name), so a file added
  later never moves the others, and N pods of an Indexed Job (``JOB_COMPLETION_INDEX``/``JOB_COMPLETIONS``)
  each take a stable share without talking to each other.
* Parts: a shard's files, ``part_size`` at a time, become ``part-sIofN-K.parquet`` (the predictions) and,
  when some files cannot be read, ``errors-sIofN-K.parquet`` (file, error). Each is written to a temporary
  file and renamed, errors first, so a part file exists only once its part is complete. A part records the
  SHA-256 of its file list: a rerun skips the parts already written for the same files and redoes the
  rest, so a run killed at any moment (SIGKILL included) loses no row and writes none twice.
* ``manifest-sIofN.json``: the model, the shard, the parts and their counts, rewritten after each part.
* Workers: image decoding and resizing run in ``workers`` processes (default: the CPU quota), feeding
  batched ONNX inference in this one; memory is bounded by one part of rows and a few batches of images,
  whatever the archive's size.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seedlings.cpus import cpu_limit
from seedlings.errors import ImageError, SeedlingsError, UsageError, missing_extra
from seedlings.fileio import atomic_write, atomic_write_json
from seedlings.images import is_image_name, open_image
from seedlings.preprocess import PreprocessSpec, resize_square
from seedlings.progress import bar

PART_SIZE = 1000
BATCH = 64


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @property
    def tag(self) -> str:
        return f"s{self.index}of{self.count}"

    def holds(self, name: str) -> bool:
        return self.count == 1 or _hash(name) % self.count == self.index


def _hash(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


def parse_shard(text: str | None, env: dict | None = None) -> Shard:
    """``I/N`` from --shard, else Kubernetes' ``JOB_COMPLETION_INDEX``/``JOB_COMPLETIONS``, else 0/1."""
    env = os.environ if env is None else env
    if text is None and env.get("JOB_COMPLETION_INDEX") is not None:
        text = f"{env['JOB_COMPLETION_INDEX']}/{env.get('JOB_COMPLETIONS') or ''}"
        if not env.get("JOB_COMPLETIONS"):
            raise UsageError("JOB_COMPLETION_INDEX is set but JOB_COMPLETIONS is not: set it to the Job's "
                             "completions (the manifest in deploy/k8s/jobs/predict does)")
    if text is None:
        return Shard()
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise UsageError(f"--shard {text}: expected I/N with 0 ≤ I < N, e.g. 0/4")
    return Shard(int(index), int(count))


def list_files(paths: list[str | Path]) -> list[tuple[Path, str]]:
    """(path, name relative to its input root) of every image, sorted by name; names must be unique."""
    files: dict[str, Path] = {}
    for root in map(Path, paths):
        if root.is_file():
            found = [(root, root.name)]
        elif root.is_dir():
            prefix = f"{root.resolve().name}/" if len(paths) > 1 else ""
            found = [(p, prefix + p.relative_to(root).as_posix()) for p in root.rglob("*")
                     if p.is_file() and is_image_name(p.name)]
        else:
            raise SeedlingsError(f"{root}: no such file or folder")
        for path, name in found:
            if name in files:
                raise SeedlingsError(f"{name}: found under two inputs ({files[name]} and {path}); predict them "
                                     "in separate runs or give their parent folder once")
            files[name] = path
    return sorted(((p, n) for n, p in files.items()), key=lambda item: item[1])


def part_names(shard: Shard, k: int) -> tuple[str, str]:
    return f"part-{shard.tag}-{k:06d}.parquet", f"errors-{shard.tag}-{k:06d}.parquet"


def _files_digest(names: list[str]) -> str:
    return hashlib.sha256("\n".join(names).encode("utf-8")).hexdigest()


# -- decoding in worker processes ------------------------------------------------------------------------

_SPEC: PreprocessSpec | None = None
_MAX_PIXELS = 0


def _init_worker(spec: PreprocessSpec, max_pixels: int) -> None:
    global _SPEC, _MAX_PIXELS
    _SPEC, _MAX_PIXELS = spec, max_pixels


def _prepare(item: tuple[str, str]) -> tuple[str, np.ndarray | None, str | None]:
    """(name, the model's S×S×3 input or None, the reason it could not be read)."""
    path, name = item
    try:
        img = open_image(path, max_pixels=_MAX_PIXELS, name=name)
        return name, resize_square(img, _SPEC.image_size, _SPEC.interpolation), None
    except ImageError as exc:
        return name, None, exc.reason
    except OSError as exc:  # vanished or unreadable between listing and reading
        return name, None, f"cannot read the file ({exc})"


class Decoder:
    """``workers`` processes (0: this one) decoding ``(path, name)`` items in order, ``chunksize`` at a time."""

    def __init__(self, spec: PreprocessSpec, max_pixels: int, workers: int):
        self.workers = workers
        _init_worker(spec, max_pixels)
        self.pool = None
        if workers > 0:
            # fork before the model's threads exist would be ideal; spawn is safe whenever it starts
            self.pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (spec, max_pixels))

    def map(self, items: list[tuple[str, str]]) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
        if self.pool is None:
            return map(_prepare, items)
        return self.pool.imap(_prepare, items, chunksize=8)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()


# -- the run ---------------------------------------------------------------------------------------------

@dataclass
class BatchJob:
    paths: list[str]
    out: Path
    shard: Shard = Shard()
    top_k: int = 3
    tta: bool = False
    workers: int | None = None
    part_size: int = PART_SIZE
    progress: bool = True


def run(model, job: BatchJob) -> dict:
    """Predict the shard's files into ``job.out``; returns the manifest (parts, rows, errors, skipped parts)."""
    pa, pq = _arrow()
    if job.part_size < 1:
        raise UsageError(f"--part-size {job.part_size}: must be ≥ 1")
    files = [(str(p), n) for p, n in list_files(job.paths) if job.shard.holds(n)]
    job.out.mkdir(parents=True, exist_ok=True)
    parts = [files[i:i + job.part_size] for i in range(0, len(files), job.part_size)]
    manifest = {"model": {"name": model.name, "version": model.version}, "shard": job.shard.tag,
                "inputs": [str(p) for p in job.paths], "files": len(files), "part_size": job.part_size,
                "parts": [], "finished": False}
    workers = cpu_limit() if job.workers is None else job.workers
    decoder = Decoder(model.spec, model.max_pixels, workers)
    try:
        with bar(len(files), f"predicting ({job.shard.tag}, {workers} decoding workers)", job.progress) as advance:
            for k, items in enumerate(parts):
                manifest["parts"].append(_part(model, job, decoder, k, items, pa, pq, advance))
                manifest["rows"] = sum(p["rows"] for p in manifest["parts"])
                manifest["errors"] = sum(p["errors"] for p in manifest["parts"])
                atomic_write_json(job.out / f"manifest-{job.shard.tag}.json", manifest)
    finally:
        decoder.close()
    manifest["finished"] = True
    manifest.setdefault("rows", 0)
    manifest.setdefault("errors", 0)
    atomic_write_json(job.out / f"manifest-{job.shard.tag}.json", manifest)
    return manifest


def _part(model, job: BatchJob, decoder: Decoder, k: int, items, pa, pq, advance) -> dict:
    """Part ``k``: read back when a finished copy for the same files exists, else predicted and written."""
    part, errors = part_names(job.shard, k)
    digest = _files_digest([n for _, n in items])
    done = _finished(job.out / part, digest, pq)
    if done is not None:
        n_err = _rows(job.out / errors, pq)
        advance(len(items))
        return {"part": part, "rows": done, "errors": n_err, "skipped": True}
    rows, failed = _predict(model, job, decoder, items, advance)
    meta = {b"seedlings.files_sha256": digest.encode(), b"seedlings.model": model.version.encode()}
    if failed:
        table = pa.table({"file": [f for f, _ in failed], "error": [e for _, e in failed]})
        _write(pq, table, job.out / errors, {})
    elif (job.out / errors).exists():
        (job.out / errors).unlink()
    _write(pq, _table(pa, rows, model, job.top_k), job.out / part, meta)
    return {"part": part, "rows": len(rows["file"]), "errors": len(failed), "skipped": False}


def _predict(model, job: BatchJob, decoder: Decoder, items, advance) -> tuple[dict, list]:
    rows = {"file": [], "probs": [], "distance": []}
    failed: list[tuple[str, str]] = []
    names, images = [], []

    def flush() -> None:
        if not images:
            return
        probs, distance = model.assess(np.stack(images), tta=job.tta)
        rows["file"] += names
        rows["probs"].append(probs)
        rows["distance"].append(distance)
        advance(len(images))
        names.clear()
        images.clear()

    for name, image, error in decoder.map(items):
        if image is None:
            failed.append((name, error))
            advance(1)
            continue
        names.append(name)
        images.append(image)
        if len(images) == BATCH:
            flush()
    flush()
    return rows, failed


def _table(pa, rows: dict, model, top_k: int):
    classes = np.asarray(model.classes)
    if rows["probs"]:
        probs = np.concatenate(rows["probs"])
        distance = None if rows["distance"][0] is None else np.concatenate(rows["distance"])
    else:
        probs, distance = np.zeros((0, len(classes))), None
    k = max(1, min(top_k, len(classes)))
    order = np.argsort(-probs, axis=1)[:, :k]
    top_p = np.take_along_axis(probs, order, axis=1)
    return pa.table({
        "file": pa.array(rows["file"], pa.string()),
        "species": pa.array(classes[order[:, 0]].tolist() if len(probs) else [], pa.string()),
        "confidence": pa.array(top_p[:, 0] if len(probs) else [], pa.float32()),
        "unknown": pa.array(model.unknown(probs, distance).tolist() if len(probs) else [], pa.bool_()),
        "top_k_species": pa.array(classes[order].tolist(), pa.list_(pa.string())),
        "top_k_probability": pa.array(top_p.tolist(), pa.list_(pa.float32())),
        "model_name": pa.array([model.name] * len(probs), pa.string()),
        "model_version": pa.array([model.version] * len(probs), pa.string()),
    })


def _write(pq, table, path: Path, meta: dict) -> None:
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _finished(path: Path, digest: str, pq) -> int | None:
    """Rows of a complete part written for the same file list; None when it must be (re)done."""
    if not path.is_file():
        return None
    try:
        meta = pq.read_metadata(path)
    except Exception:  # a damaged file is redone, not trusted
        return None
    if (meta.metadata or {}).get(b"seedlings.files_sha256", b"").decode() != digest:
        return None
    return meta.num_rows


def _rows(path: Path, pq) -> int:
    return pq.read_metadata(path).num_rows if path.is_file() else 0


def read_results(out: str | Path) -> tuple[list[dict], list[dict]]:
    """Every prediction row and every error row in a result folder (all shards), sorted by file."""
    _, pq = _arrow()
    out = Path(out)
    parts = sorted(out.glob("part-*.parquet"))
    if not parts and not list(out.glob("manifest-*.json")):
        raise SeedlingsError(f"{out}: no results here (manifest-*.json and part-*.parquet, from seedlings predict "
                             "--out)")
    rows = [r for p in parts for r in pq.read_table(p).to_pylist()]
    errors = [r for p in sorted(out.glob("errors-*.parquet")) for r in pq.read_table(p).to_pylist()]
    return sorted(rows, key=lambda r: r["file"]), sorted(errors, key=lambda r: r["file"])


def manifests(out: str | Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(Path(out).glob("manifest-*.json"))]


def _arrow():
    try:
        import pyarrow as pa  # lazy: the batch extra
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise missing_extra("batch", exc.name or "pyarrow") from exc
    return pa, pq
