"""Every listed file of a run folder is verified before it is read: a tampered file is refused by every
command that reads it (export, evaluate, predict through the torch backend; --init reads only the weights)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from seedlings.artifact import NOVELTY, WEIGHTS

LISTED = [WEIGHTS, NOVELTY]


def tampered_copy(run, tmp_path, name: str):
    copy = tmp_path / f"run-{name.split('.')[0]}"
    shutil.copytree(run, copy)
    data = bytearray((copy / name).read_bytes())
    data[-1] ^= 0xFF  # one bit pattern changed at the end of the file: still loadable, not the same
    (copy / name).write_bytes(bytes(data))
    return copy


def seedlings(*args: str):
    return subprocess.run([sys.executable, "-m", "seedlings", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", LISTED)
def test_every_command_refuses_a_tampered_run_file(trained_run, dataset, tmp_path, name):
    assert name in json.loads((trained_run / "model.json").read_text())["files"]
    run = tampered_copy(trained_run, tmp_path, name)
    commands = {
        "export": ("export", str(run), "--out", str(tmp_path / "exported")),
        "evaluate": ("evaluate", "--model", str(run), "--data", str(dataset)),
        "predict": ("predict", str(next(dataset.rglob("*.png"))), "--model", str(run)),
        "--init": ("train", "--data", str(dataset), "--out", str(tmp_path / "init"), "--init", str(run),
                   "--epochs", "1", "--min-steps", "0", "--image-size", "32", "--threads", "1"),
    }
    if name != WEIGHTS:
        del commands["--init"]  # it starts from the network alone; the detector is fitted anew by the new run
    for what, args in commands.items():
        p = seedlings(*args)
        assert p.returncode == 1, (what, p.stdout, p.stderr)
        assert f"{name}: sha256" in p.stderr and "does not match model.json" in p.stderr, (what, p.stderr)
        assert "Traceback" not in p.stderr
    assert not (tmp_path / "exported" / "model.json").exists() and not (tmp_path / "init" / "model.json").exists()
