"""fileio.py: atomic writes leave the old file or the new one, never half of one."""

from __future__ import annotations

import hashlib
import os

import pytest

from seedlings.errors import SeedlingsError
from seedlings.fileio import atomic_write, atomic_write_json, read_json, sha256_file


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.json"
    atomic_write_json(path, {"a": 1})

    def broken(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write('{"a": ')
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert read_json(path, "model.json") == {"a": 1}
    assert os.listdir(tmp_path) == ["model.json"]


def test_written_files_are_readable_by_others(tmp_path):
    path = atomic_write_json(tmp_path / "sub" / "x.json", [1])
    assert path.stat().st_mode & 0o044  # group and others may read (a container's user)


def test_read_json_names_the_file_and_the_problem(tmp_path):
    with pytest.raises(SeedlingsError, match="split file not found"):
        read_json(tmp_path / "split.json", "split file")
    (tmp_path / "split.json").write_text("{")
    with pytest.raises(SeedlingsError, match="split.json: split file is not valid JSON"):
        read_json(tmp_path / "split.json", "split file")


def test_sha256_file(tmp_path):
    (tmp_path / "w").write_bytes(b"weights" * 100_000)
    assert sha256_file(tmp_path / "w") == hashlib.sha256(b"weights" * 100_000).hexdigest()
