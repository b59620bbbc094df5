"""A model folder either loads completely or is refused, with one line that says what is wrong.

``serve`` runs this before uvicorn starts (so a bad folder is exit code 1 and one line, never a
traceback from a worker, nor uvicorn's exit code 3), and the predictor runs the same checks when it loads,
on its own session (one session opened per load: each costs 0.1–0.2 s of a container's cold start).
``model.json`` goes through :class:`seedlings.artifact.ModelFile` (the one validating loader); then
the ONNX file is checked against its sha256, opened with ONNX Runtime, and its output width compared
with the number of classes: a model with 12 outputs and 11 class names would otherwise start, say
ready, and answer 500 to every request.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seedlings.artifact import ONNX_FILES, ModelFile, ModelFileError
from seedlings.errors import SeedlingsError, missing_extra
from seedlings.serving.limits import release_memory


def check_model_dir(model_dir: Path, precision: str = "fp32") -> ModelFile:
    """The validated model file of ``model_dir``; raises SeedlingsError (exit code 1) for anything unusable."""
    model, path = check_model_files(model_dir, precision)
    session = _open(path)
    check_outputs(session, path, model)
    del session
    release_memory()  # the check's session is gone: give its memory back
    return model


def check_model_files(model_dir: Path, precision: str = "fp32") -> tuple[ModelFile, Path]:
    """model.json validated and the ONNX file checked against its sha256 (nothing opened yet): (file, ONNX path)."""
    model = ModelFile.load(model_dir)
    onnx_name = ONNX_FILES[precision]
    if not (model_dir / onnx_name).is_file():
        how = "`seedlings export RUN" + (" --precision int8`" if precision == "int8" else "`")
        raise SeedlingsError(f"{model_dir}: no {onnx_name}; the service runs ONNX models only: {how}")
    return model, model.verify_file(model_dir, onnx_name)


def check_outputs(session, path: Path, model: ModelFile) -> None:
    """The session's logits are as wide as model.json's class list (the predictor checks its own session)."""
    width = _output_width(session, path, model)
    if width != len(model.classes):
        raise ModelFileError(f"{path}: the model has {width} outputs but model.json lists {len(model.classes)} "
                             "classes; the folder mixes files of different models: re-export it")


def _open(path: Path):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise missing_extra("serve", "onnxruntime") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    # Only opened to be checked: no graph optimisation (half the time to open; the outputs are the same).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 4  # its own errors come back as the exception below
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types, several lines long
        raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({_first_line(exc)}); re-export the "
                             "model") from exc


def _output_width(session, path: Path, model: ModelFile) -> int:
    """The logits' width: from the graph when it is fixed there, else from one run on a blank image."""
    outputs, inputs = session.get_outputs(), session.get_inputs()
    if not outputs or len(inputs) != 1:
        raise ModelFileError(f"{path}: expected one input and at least one output, found {len(inputs)} and "
                             f"{len(outputs)}; re-export the model")
    shape = outputs[0].shape
    if shape and isinstance(shape[-1], int):
        return shape[-1]
    size = model.image_size
    x = np.zeros((1, 3, size, size) if model.preprocess.layout == "NCHW" else (1, size, size, 3), np.float32)
    try:
        logits = session.run([outputs[0].name], {inputs[0].name: x})[0]
    except Exception as exc:
        raise ModelFileError(f"{path}: a test run on a {size}×{size} image failed ({_first_line(exc)}); "
                             "re-export the model") from exc
    return int(np.asarray(logits).shape[-1])


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
