"""The model registry: exported model folders by version, a ``current`` pointer switched atomically, a history.

Layout (docs/registry.md)::

    REGISTRY/
      current.json       the pointer: {"version", "previous", "switched_at", "decision", "forced", "reason", "by"}
      promotions.jsonl   one JSON object a line: every switch (promotion, forced or not, rollback) and every refusal
      <version>/         an exported model folder (model.json, model.onnx, …), verified on the way in, never changed
      .lock              held (flock) while a version is added or the pointer switched: one promotion at a time

Why the pointer is a small JSON file replaced by rename (and not a symlink): an atomic rename of a file works on
every volume a Kubernetes cluster mounts (NFS, CephFS, EFS, Azure Files, a local disk), symlinks do not (SMB/CIFS
shares, some FUSE object-store mounts); readers (``serve --model REGISTRY`` in every pod) see the old file or the new
one, never half of one; and the file carries what a symlink cannot: the previous version (for ``--rollback``) and why
the switch was made. It names a folder of this registry only (a version name, never a path).

Core layer: no torch, no web framework; ``seedlings promote`` (promotion.py) decides, the service follows
(serving/follow.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from seedlings.artifact import MODEL_JSON, ONNX_FILES, ModelFile
from seedlings.errors import SeedlingsError
from seedlings.fileio import atomic_write_json, read_json, sha256_file

CURRENT = "current.json"
HISTORY = "promotions.jsonl"
LOCK = ".lock"
INCOMING = ".incoming-"  # a version being copied in: renamed into place once complete and verified
RESERVED = frozenset({CURRENT, HISTORY, LOCK})
DECISIONS = ("first", "accepted", "refused", "rollback")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


class RegistryError(SeedlingsError):
    """The registry or a model folder for it is unusable; the message says which file and what to do."""


@dataclass(frozen=True)
class Pointer:
    """The content of ``current.json``: the version served and how it came to be."""

    version: str
    previous: str | None = None  # the version it replaced: where --rollback goes
    switched_at: str = ""
    decision: str = "accepted"  # first | accepted | refused (switched with --force) | rollback
    forced: bool = False
    reason: str | None = None
    by: str | None = None

    @classmethod
    def from_dict(cls, d, where: str) -> Pointer:
        if not isinstance(d, dict) or not isinstance(d.get("version"), str):
            raise RegistryError(f"{where}: expected a JSON object with a 'version' string; restore it from the last "
                                f"switch in {HISTORY} (its 'to' and 'from')")
        for key in ("version", "previous"):
            if d.get(key) is not None:
                check_version(d[key], f"{where}: {key}")
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


def check_version(version, where: str = "version") -> str:
    """A version names a folder of the registry: letters, digits and ``. _ + -``, nothing that leaves the folder."""
    if not isinstance(version, str) or not _VERSION.match(version) or version in RESERVED:
        raise RegistryError(f"{where}: {version!r} is not a usable version name (letters, digits, '.', '_', '+', '-'; "
                            f"at most 128 characters; not {', '.join(sorted(RESERVED))}); set another one in "
                            "model.json or with --as-version")
    return version


def is_registry(path: str | Path | None) -> bool:
    """Whether ``path`` is a registry folder (it has the pointer or the history) rather than a model folder."""
    if path is None:
        return False
    p = Path(path).expanduser()
    return p.is_dir() and not (p / MODEL_JSON).is_file() and ((p / CURRENT).is_file() or (p / HISTORY).is_file())


def verify_model_folder(path: str | Path) -> ModelFile:
    """An exported model folder whose every listed file matches its sha256; anything else is refused."""
    path = Path(path)
    model = ModelFile.load(path)
    onnx = ONNX_FILES["fp32"]
    if onnx not in model.files:
        raise RegistryError(f"{path}: model.json lists no {onnx}: not an exported model (the service runs ONNX only); "
                            "run `seedlings export RUN --out DIR` and promote DIR")
    for name in model.files:
        model.verify_file(path, name)
    return model


def folder_digest(path: str | Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (hidden ones aside), by relative name: a version's content."""
    root = Path(path)
    return {p.relative_to(root).as_posix(): sha256_file(p) for p in sorted(root.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def user() -> str | None:
    """Who ran the command, for the record (a container may have no passwd entry for its uid)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return os.environ.get("USER") or str(os.getuid())


class Registry:
    """One registry folder. Reading needs only read access (the service's pods); writing takes ``.lock``."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    # -- reading ----------------------------------------------------------------------------------
    def pointer(self) -> Pointer | None:
        """``current.json``, validated; None for an empty registry."""
        path = self.root / CURRENT
        if not path.is_file():
            if not self.root.is_dir():
                raise RegistryError(f"{self.root}: no such registry folder")
            return None
        return Pointer.from_dict(read_json(path, "the registry's current pointer"), str(path))

    def current(self) -> str | None:
        pointer = self.pointer()
        return None if pointer is None else pointer.version

    def version_dir(self, version: str) -> Path:
        return self.root / check_version(version)

    def current_dir(self) -> Path:
        """The current version's folder; an empty registry or a pointer to a missing folder is refused."""
        pointer = self.pointer()
        if pointer is None:
            raise RegistryError(f"{self.root}: the registry has no current model yet; promote one first: "
                                f"seedlings promote MODEL_DIR --registry {self.root} --test DATA")
        folder = self.version_dir(pointer.version)
        if not (folder / MODEL_JSON).is_file():
            raise RegistryError(f"{self.root / CURRENT}: names version {pointer.version!r} but {folder} holds no "
                                "model.json; roll back (seedlings promote --rollback) or promote another model")
        return folder

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and _VERSION.match(p.name) and (p / MODEL_JSON).is_file())

    def history(self) -> list[dict]:
        """The records of ``promotions.jsonl``, oldest first (a line cut short by a crash is skipped)."""
        path = self.root / HISTORY
        if not path.is_file():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    # -- writing ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self):
        """One writer at a time (another ``seedlings promote`` waits here)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def add(self, candidate: str | Path, version: str | None = None) -> tuple[str, bool]:
        """Copy an exported model folder into ``REGISTRY/<version>/`` (default: model.json's version); returns the
        version and whether it was copied (False: the same content was already there). A version that exists with
        other content is refused."""
        candidate = Path(candidate).expanduser()
        model = verify_model_folder(candidate)
        version = check_version(version or model.version, f"{candidate / MODEL_JSON}: version")
        with self.locked():
            incoming = Path(tempfile.mkdtemp(prefix=f"{INCOMING}{version}-", dir=self.root))
            try:
                staged = self._stage(candidate, incoming / version, model, version)
                return version, self._move_in(staged, version, candidate)
            finally:
                shutil.rmtree(incoming, ignore_errors=True)

    def _stage(self, candidate: Path, staged: Path, model: ModelFile, version: str) -> Path:
        shutil.copytree(candidate, staged, ignore=_hidden, copy_function=_copy_synced)
        _readable(staged)
        if version != model.version:  # --as-version: the service shows model.json's version, so it says the same
            ModelFile.load(staged).replace(version=version).save(staged)
        verify_model_folder(staged)  # what was copied, not only what was read
        return staged

    def _move_in(self, staged: Path, version: str, candidate: Path) -> bool:
        target = self.version_dir(version)
        if not target.exists():
            try:
                os.rename(staged, target)  # atomic: the folder appears complete or not at all
                return True
            except OSError:
                if not target.exists():
                    raise
        if folder_digest(staged) != folder_digest(target):
            raise RegistryError(f"{target}: version {version} is already in the registry with other content than "
                                f"{candidate}; a version is never overwritten: re-export with a new version or "
                                "promote with --as-version NEW_VERSION")
        return False

    def switch(self, to: str, expected: str | None, decision: str, forced: bool = False, reason: str | None = None,
               figures: dict | None = None) -> Pointer:
        """Make ``to`` current, provided the current version is still ``expected`` (what the decision compared
        against; another promotion in between means comparing again), and record it."""
        if not (self.version_dir(to) / MODEL_JSON).is_file():
            raise RegistryError(f"{self.version_dir(to)}: no such version in the registry; add it first")
        with self.locked():
            now_current = self.current()
            if now_current != expected:
                raise RegistryError(f"{self.root / CURRENT}: changed from {expected} to {now_current} while this "
                                    "promotion was deciding; run it again to compare with the new current model")
            pointer = Pointer(version=to, previous=expected, switched_at=now(), decision=decision, forced=forced,
                              reason=reason, by=user())
            # The pointer first: it names its own switch (time, decision, reason), so even a crash before the
            # history line below leaves the switch explained.
            atomic_write_json(self.root / CURRENT, asdict(pointer))
            self.record(expected, to, decision, switched=True, forced=forced, reason=reason, figures=figures)
        return pointer

    def refuse(self, to: str, current: str | None, reason: str | None = None, figures: dict | None = None) -> dict:
        """Record a refused promotion (the pointer stays)."""
        with self.locked():
            return self.record(current, to, "refused", switched=False, forced=False, reason=reason, figures=figures)

    def rollback(self, reason: str | None = None) -> Pointer:
        """Make the previous version current again; the one before it becomes the new previous (repeated rollbacks
        walk back through the promotions)."""
        if not self.root.is_dir():
            raise RegistryError(f"{self.root}: no such registry folder")
        with self.locked():
            pointer = self.pointer()
            if pointer is None:
                raise RegistryError(f"{self.root}: the registry has no current model; nothing to roll back")
            if pointer.previous is None:
                raise RegistryError(f"{self.root / CURRENT}: version {pointer.version} has no previous version to "
                                    "roll back to (it was the first one, or reached by rolling back)")
            verify_model_folder(self.version_dir(pointer.previous))
            new = Pointer(version=pointer.previous, previous=self._before(pointer.previous), switched_at=now(),
                          decision="rollback", reason=reason, by=user())
            atomic_write_json(self.root / CURRENT, asdict(new))
            self.record(pointer.version, new.version, "rollback", switched=True, forced=False, reason=reason)
        return new

    def _before(self, version: str) -> str | None:
        """The version that ``version`` replaced when it was last promoted (rollbacks aside)."""
        for record in reversed(self.history()):
            if record.get("to") == version and record.get("switched") and record.get("decision") != "rollback":
                before = record.get("from")
                return before if isinstance(before, str) and _VERSION.match(before) else None
        return None

    def record(self, frm: str | None, to: str, decision: str, switched: bool, forced: bool,
               reason: str | None = None, figures: dict | None = None) -> dict:
        """Append one line to ``promotions.jsonl`` (one write, then fsync: a crash leaves at most a cut last line,
        which readers skip)."""
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r}: expected one of {DECISIONS}")
        entry = {"time": now(), "from": frm, "to": to, "decision": decision, "switched": switched, "forced": forced,
                 "reason": reason, "by": user(), "figures": figures}
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.root / HISTORY, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry


def _hidden(folder: str, names: list[str]) -> set[str]:
    return {n for n in names if n.startswith(".")}


def _readable(folder: Path) -> None:
    """Folders as the umask makes new ones (copytree copies the source's mode, maybe 0700): the service may run as
    another user than `seedlings promote` (a container's)."""
    mask = os.umask(0)
    os.umask(mask)
    for d in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        os.chmod(d, 0o777 & ~mask)


def _copy_synced(src: str, dst: str) -> str:
    """Copy one file (mode from the umask, like any new file) and fsync it: the folder is renamed into place only
    once its files are on disk."""
    shutil.copyfile(src, dst)
    fd = os.open(dst, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return dst
