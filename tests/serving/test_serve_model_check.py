"""A model folder either loads completely or is refused at start: one clear line, exit code 1.

Before, a folder whose model.json listed fewer classes than the model's outputs started, said ready on
/readyz, and answered 500 to every prediction; a list for model.json or a non-numeric temperature was a
traceback from inside uvicorn's worker (exit code 3).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from tests.serving.conftest import serve_command

from seedlings.cli import main
from seedlings.fileio import sha256_file


def broken_copy(model_dir, tmp_path, change) -> str:
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta = change(meta, folder)
    (folder / "model.json").write_text(json.dumps(meta))
    return str(folder)


def fewer_classes(meta, folder):
    meta["classes"] = meta["classes"][:-1]
    return meta


def more_classes(meta, folder):
    meta["classes"] = [*meta["classes"], "Extra species"]
    return meta


def as_list(meta, folder):
    return [meta]


def no_sha256(meta, folder):
    del meta["files"]["model.onnx"]["sha256"]
    return meta


def onnx_not_loadable(meta, folder):
    (folder / "model.onnx").write_bytes(b"\x08\x07not an onnx graph" * 10)
    meta["files"]["model.onnx"]["sha256"] = sha256_file(folder / "model.onnx")
    return meta


def text_temperature(meta, folder):
    meta["calibration"]["temperature"] = "warm"
    return meta


def text_threshold(meta, folder):
    meta["unknown"]["threshold"] = "high"
    return meta


def text_image_size(meta, folder):
    meta["preprocess"]["image_size"] = "big"
    meta.pop("image_size", None)
    return meta


CASES = {
    "fewer classes": (fewer_classes, "outputs but model.json lists"),
    "more classes": (more_classes, "outputs but model.json lists"),
    "a list": (as_list, "expected a JSON object"),
    "files entry without sha256": (no_sha256, "lacks a sha256"),
    "onnx that does not load": (onnx_not_loadable, "ONNX Runtime cannot load it"),
    "text temperature": (text_temperature, "temperature"),
    "text threshold": (text_threshold, "threshold"),
    "text image size": (text_image_size, "image_size"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_model_folder_is_refused_in_one_line(model_dir, tmp_path, capsys, case):
    change, expected = CASES[case]
    folder = broken_copy(model_dir, tmp_path, change)
    assert main(["serve", "--model", folder, "--port", "0"]) == 1
    err = capsys.readouterr().err.strip()
    assert expected in err and "Traceback" not in err and len(err.splitlines()) == 1, err


def test_class_count_mismatch_exits_1_before_listening(model_dir, tmp_path):
    """As users run it: the real command exits 1 with one line; it never reaches uvicorn (exit 3)."""
    folder = broken_copy(model_dir, tmp_path, fewer_classes)
    result = subprocess.run([*serve_command(), "--model", folder, "--port", "0"], capture_output=True, text=True,
                            timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "classes" in lines[0], result.stderr


def test_the_app_refuses_it_too(model_dir, tmp_path):
    """The predictor runs the same check when it loads (a worker started without `serve`'s check)."""
    from seedlings.errors import SeedlingsError
    from seedlings.serving.metrics import Metrics
    from seedlings.serving.predictor import Predictor
    from seedlings.serving.settings import Settings

    folder = broken_copy(model_dir, tmp_path, more_classes)
    with pytest.raises(SeedlingsError, match="outputs but model.json lists"):
        Predictor.load(Settings(model_dir=folder, threads=1), Metrics())
