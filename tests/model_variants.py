"""Distinguishable exported models for the registry tests (tests/test_registry.py, tests/cli/test_promote.py,
tests/serving/test_serve_registry.py), made from the session's one tiny exported model without training again."""

from __future__ import annotations

import shutil
from pathlib import Path

from seedlings.artifact import ModelFile

SWAP = ("Black-grass", "Common Chickweed")  # tests/helpers.SYNTH_CLASSES: the disc and the cross


def model_variant(source: Path, dest: Path, version: str, swap: tuple[str, str] | None = None) -> Path:
    """A copy of an exported model under another version. With ``swap``, two species' names are exchanged in
    model.json: the same network, now wrong on those two species (clearly worse than the source on their photos,
    equal on the others)."""
    shutil.copytree(source, dest)
    model = ModelFile.load(dest)
    classes = list(model.classes)
    if swap:
        i, j = classes.index(swap[0]), classes.index(swap[1])
        classes[i], classes[j] = classes[j], classes[i]
    model.replace(version=version, classes=classes).save(dest)
    return dest


def flip_a_byte(path: Path) -> None:
    """Corrupt a file the way a bad disk or a partial copy would: one byte in the middle changed."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
