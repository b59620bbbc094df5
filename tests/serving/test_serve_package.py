"""The wheel (what the Docker image installs) carries every file the service serves from static/."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "seedlings" / "serving" / "static"


def test_wheel_holds_all_static_files(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tree / name)
    shutil.copytree(ROOT / "src", tree / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                             "-w", str(tmp_path / "dist"), str(tree)], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("seedlings-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {"seedlings/serving/" + p.relative_to(STATIC.parent).as_posix()
              for p in STATIC.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert "seedlings/serving/static/swagger-ui/swagger-ui-bundle.js" in wanted
    missing = sorted(wanted - names)
    assert not missing, f"package data misses {missing}: add them to [tool.setuptools.package-data]"
