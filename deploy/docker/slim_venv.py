"""Trim the serve image's virtual environment: what the service never loads, and source next to bytecode.

Why: the serve image is what a cluster pulls when it scales from zero; every megabyte is on the cold
path of a new node. Measured on the serve extra + the feedback extra (docs/deploy.md, "Cold start"):

- ONNX Runtime's `libonnxruntime.so` (35 MB) is its C API library: the Python module
  (`onnxruntime_pybind11_state`) carries the runtime itself and does not load it (checked below, and the
  build runs a model afterwards). Its `transformers/`, `quantization/` and `tools/` subpackages (9 MB) are
  model-conversion tools, never imported by inference.
- test suites, type stubs (`*.pyi`), numpy's `distutils` and `f2py` (build tools): never imported.
- symbols of shared objects that no loader needs (`strip --strip-unneeded`, when binutils is there): about
  15 MB, most of it SQLAlchemy's Cython modules and PyYAML's and Pillow's extensions; a file that would no
  longer load stripped is put back (numpy's OpenBLAS).
- third-party packages keep only their bytecode (`module.pyc` where `module.py` was, compiled by this very
  interpreter): about 33 MB less, and nothing to stat or compile at start. A traceback through them shows
  file and line number but not the line's text. Packages named with --keep-source are left as they are;
  seedlings is installed later and keeps its sources.

Standard library only. Usage: python slim_venv.py SITE_PACKAGES [--keep-source NAME ...]
"""

from __future__ import annotations

import argparse
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

UNUSED = [
    "onnxruntime/transformers",
    "onnxruntime/quantization",
    "onnxruntime/tools",
    "numpy/distutils",
    "numpy/f2py",
]


def size_mb(root: Path) -> float:
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink()) / 1e6


def drop_unused(site: Path) -> None:
    for rel in UNUSED:
        shutil.rmtree(site / rel, ignore_errors=True)
    capi = site / "onnxruntime" / "capi"
    pybind = list(capi.glob("onnxruntime_pybind11_state*.so"))
    # Only when the Python module does not name the C API library among what it loads.
    if pybind and all(b"libonnxruntime.so" not in p.read_bytes() for p in pybind):
        for lib in capi.glob("libonnxruntime.so*"):
            lib.unlink()
    for tests in [d for d in site.rglob("tests") if d.is_dir()]:
        shutil.rmtree(tests, ignore_errors=True)
    for stub in site.rglob("*.pyi"):
        stub.unlink()


def loads(path: Path) -> bool:
    """Whether the dynamic loader takes ``path`` (in a child process: a loaded library never unloads)."""
    probe = "import ctypes, sys; ctypes.CDLL(sys.argv[1])"
    return subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True).returncode == 0


def strip(site: Path) -> None:
    """Symbols no loader needs, from shared objects (SQLAlchemy's Cython modules, PyYAML, Pillow…: ~15 MB).

    Each stripped file must still load, else it is put back: `strip` can break a library that auditwheel
    rewrote with patchelf (numpy's OpenBLAS: "ELF load command address/offset not page-aligned")."""
    tool = shutil.which("strip")
    if not tool:
        print("slim_venv: no `strip` (binutils): shared objects left as they are")
        return
    stripped, kept = 0, []
    for obj in sorted(f for f in site.rglob("*.so*") if f.is_file() and not f.is_symlink()):
        if not loads(obj):
            continue  # not loadable on its own here (a plugin of something else): leave it alone
        original = obj.read_bytes()
        if subprocess.run([tool, "--strip-unneeded", str(obj)], capture_output=True).returncode or not loads(obj):
            obj.write_bytes(original)
            kept.append(obj.name)
        else:
            stripped += 1
    print(f"slim_venv: stripped {stripped} shared objects; left {len(kept)} that would not load stripped: "
          f"{', '.join(kept) or 'none'}")


def sourceless(top: Path) -> tuple[int, int]:
    """Compile every .py under ``top`` to a .pyc beside it and delete the source; (compiled, kept)."""
    files = [top] if top.is_file() else sorted(top.rglob("*.py"))
    compiled = kept = 0
    for py in files:
        try:
            py_compile.compile(str(py), cfile=str(py) + "c", doraise=True)
        except py_compile.PyCompileError:
            kept += 1  # not Python this interpreter can import (a template, a Python 2 file): data, left as is
            continue
        py.unlink()
        compiled += 1
    if top.is_dir():
        for cache in [d for d in top.rglob("__pycache__") if d.is_dir()]:
            shutil.rmtree(cache)
    return compiled, kept


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", type=Path, help="the venv's site-packages")
    ap.add_argument("--keep-source", nargs="*", default=[], help="top-level names to leave as they are")
    args = ap.parse_args(argv)
    before = size_mb(args.site)
    drop_unused(args.site)
    strip(args.site)
    compiled = kept = 0
    keep = set(args.keep_source) | {"__pycache__"}
    for top in sorted(args.site.iterdir()):
        name = top.name.removesuffix(".py")
        if name in keep or top.name.endswith((".dist-info", ".libs", ".pth")) or top.is_symlink():
            continue
        if top.is_dir() or top.suffix == ".py":
            c, k = sourceless(top)
            compiled, kept = compiled + c, kept + k
    shutil.rmtree(args.site / "__pycache__", ignore_errors=True)
    print(f"slim_venv: {before:.0f} MB -> {size_mb(args.site):.0f} MB; {compiled} modules as bytecode only, "
          f"{kept} non-importable .py files left")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
