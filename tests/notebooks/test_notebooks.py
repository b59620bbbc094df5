"""The notebooks run top to bottom (small settings, in a temporary folder) and are committed without outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
MAIN = NOTEBOOKS / "plant-seedlings.ipynb"
COMPARE = NOTEBOOKS / "compare-backbones.ipynb"
CELL_TIMEOUT_S = 600


def _committed_notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def test_both_notebooks_exist():
    assert MAIN.is_file() and COMPARE.is_file()


@pytest.mark.parametrize("path", _committed_notebooks(), ids=lambda p: p.name)
def test_notebook_is_stripped(path: Path):
    """Outputs and execution counts stay out of git: review diffs, not pictures."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    dirty = [i for i, cell in enumerate(nb["cells"]) if cell["cell_type"] == "code"
             and (cell.get("outputs") or cell.get("execution_count") is not None)]
    assert not dirty, (f"{path.name}: code cell(s) {dirty} have outputs or execution counts; clear them "
                       "(Kernel → Restart and Clear Outputs, or `nbstripout notebooks/*.ipynb`)")
    assert "widgets" not in nb.get("metadata", {}), f"{path.name}: widget state in the metadata; strip it"


@pytest.fixture
def kernel(tmp_path, monkeypatch) -> str:
    """A kernel spec for this interpreter, so a user's own `python3` kernel cannot run the notebooks instead."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    spec = tmp_path / "jupyter" / "kernels" / "seedlings-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "seedlings tests", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYDEVD_DISABLE_FILE_VALIDATION", "1")
    return "seedlings-test"


def execute(path: Path, cwd: Path, kernel_name: str) -> dict:
    """Run every cell; a failing cell raises CellExecutionError naming the cell. The executed copy is kept."""
    import nbclient
    import nbformat

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=kernel_name,
                                     resources={"metadata": {"path": str(cwd)}})
    try:
        client.execute()
    finally:
        nbformat.write(nb, cwd / f"executed-{path.name}")  # open it to see how far it got
    return nb


def _text(nb) -> str:
    """Printed text and displayed tables of all cells."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") + o.get("data", {}).get("text/markdown", ""))
    return "\n".join(out)


@pytest.mark.slow
@pytest.mark.timeout(1500)
@pytest.mark.parametrize("data, small", [("auto", "1"), ("synthetic", "0")], ids=["auto-small", "synthetic-defaults"])
def test_notebooks_run_top_to_bottom(tmp_path, monkeypatch, kernel, data, small):
    """plant-seedlings, then compare-backbones on its run folder.

    auto-small: the real photos when present (a 12-per-species subset), else synthetic; 1 epoch at 32 px.
    synthetic-defaults: the notebook's own default parameters, on its synthetic folder (seconds, not minutes).
    """
    work = tmp_path / "work"
    monkeypatch.setenv("SEEDLINGS_NOTEBOOK_WORK", str(work))
    monkeypatch.setenv("SEEDLINGS_NOTEBOOK_SMALL", small)
    monkeypatch.setenv("SEEDLINGS_NOTEBOOK_DATA", data)
    monkeypatch.delenv("SEEDLINGS_NOTEBOOK_DEMO", raising=False)
    nb = execute(MAIN, tmp_path, kernel)
    out = _text(nb)
    assert "/v1/predict" in out and "HTTP 200" in out
    assert "the service agrees" in out and "seedlings serve stopped" in out
    runs = [p for p in (work / "runs").iterdir() if (p / "model.json").is_file()]
    assert len(runs) == 1, runs

    monkeypatch.setenv("SEEDLINGS_NOTEBOOK_RUNS", str(work / "runs"))
    nb = execute(COMPARE, tmp_path, kernel)
    assert runs[0].name in _text(nb)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("demo", ["0", "1"])
def test_compare_notebook_without_runs(tmp_path, monkeypatch, kernel, demo):
    """No finished run: it says so and ends; with SEEDLINGS_NOTEBOOK_DEMO=1 it trains two tiny synthetic runs."""
    runs = tmp_path / "runs"
    runs.mkdir()
    monkeypatch.setenv("SEEDLINGS_NOTEBOOK_RUNS", str(runs))
    monkeypatch.setenv("SEEDLINGS_NOTEBOOK_DEMO", demo)
    out = _text(execute(COMPARE, tmp_path, kernel))
    if demo == "1":
        assert len([p for p in runs.rglob("model.json")]) == 2
        assert "2 finished run(s)" in out
    else:
        assert "no finished run" in out.lower()
