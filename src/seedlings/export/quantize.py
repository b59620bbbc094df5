"""int8 ONNX: static QDQ quantization calibrated on real validation images.

Static (not dynamic) quantization because convolutions dominate a CNN and only static
quantization lets ONNX Runtime fuse them into integer kernels (VNNI/AMX on x86): about twice
the fp32 speed. Weights per-channel int8 (per-tensor loses accuracy on depthwise/BN-folded
convolutions), activations uint8 with ranges observed on the calibration images.

Measured alternatives (docs/serving.md, default model, 2-core AVX2 CPU without VNNI): QOperator
instead of QDQ, per-tensor weights, ``reduce_range``, percentile calibration all land within a few
per cent of this choice (1.75-1.9x fp32) and within two of 603 validation images of its accuracy;
uint8 weights are slower (1.25x). After ONNX Runtime's graph optimisation the model is integer
from end to end (QLinearConv is 92 % of the time), so what is left is the CPU's int8 throughput:
without VNNI an int8 multiply-add takes AVX2's two-step vpmaddubsw/vpmaddwd path, about 2x fp32.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from seedlings.errors import SeedlingsError
from seedlings.evaluation.metrics import softmax
from seedlings.fileio import atomic_write
from seedlings.preprocess import PreprocessSpec, normalize

CALIBRATION_BATCH = 8


def _calibration_reader(images_uint8: np.ndarray, spec: PreprocessSpec, input_name: str):
    """A CalibrationDataReader over the images, normalised exactly as serving will."""
    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter([normalize(images_uint8[i:i + CALIBRATION_BATCH], spec)
                                  for i in range(0, len(images_uint8), CALIBRATION_BATCH)])

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {input_name: batch}

    return _Reader()


def _preprocess_graph(fp32_path: Path, out_path: Path, log) -> Path:
    """Shape inference + graph optimisation first, as ONNX Runtime recommends; optional."""
    try:
        quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=False)
        return out_path
    except Exception as exc:  # the pre-pass is an optimisation; quantizing the raw graph still works
        log(f"int8: quantization pre-processing skipped ({exc.__class__.__name__}: {exc})")
        return fp32_path


def distance_only_nodes(graph) -> list[str]:
    """Names of the nodes that only the ``distance`` output needs (the "not a seedling" detector after the
    pooled features). They stay float: they cost nothing next to the backbone, and the whitening matrix
    and class directions need no 8-bit rounding on top of the int8 backbone's own error. (That error is
    what moves the distance: on the 160 px Lite0 the int8 features move it by a median 55 % with this
    branch float or not, so its int8 model flags 10 % of validation images instead of 2 %.)"""
    producer = {out: node for node in graph.node for out in node.output}

    def cone(name: str) -> set[str]:
        seen, todo = set(), [name]
        while todo:
            node = producer.get(todo.pop())
            if node is not None and node.name not in seen:
                seen.add(node.name)
                todo.extend(node.input)
        return seen

    outputs = {o.name for o in graph.output}
    if "distance" not in outputs or "logits" not in outputs:
        return []
    return sorted(n for n in cone("distance") - cone("logits") if n)


def onnx_probs(path: Path, images_uint8: np.ndarray, spec: PreprocessSpec, batch: int = 128) -> np.ndarray:
    """Probabilities (no temperature) of an ONNX model file for uint8 N×S×S×3 images."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    logits = [sess.run(None, {name: normalize(images_uint8[i:i + batch], spec)})[0]
              for i in range(0, len(images_uint8), batch)]
    return softmax(np.concatenate(logits).astype(np.float64))


def _referenceonnx_probs(fp32_path: Path, images_uint8: np.ndarray, spec: PreprocessSpec, torch_model):
    """What int8 is compared with: the PyTorch model when given (the truth), else the fp32 ONNX."""
    if torch_model is None:
        return onnx_probs(fp32_path, images_uint8, spec)
    with torch.no_grad():
        logits = torch_model(torch.from_numpy(normalize(images_uint8, spec))).double().numpy()
    return softmax(logits)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, images_uint8: np.ndarray,
                  spec: PreprocessSpec, torch_model=None, log=print) -> dict:
    """Write ``out_path`` (int8 QDQ) from ``fp32_path``; returns how far int8 moves the predictions.

    The returned dict goes into ``model.json['export']['int8']`` so the model card shows the
    cost of int8 (max |Δprob| and top-1 agreement on the calibration images).
    """
    fp32_path, out_path = Path(fp32_path), Path(out_path)
    images_uint8 = np.asarray(images_uint8, dtype=np.uint8)
    if images_uint8.ndim != 4 or len(images_uint8) == 0:
        raise SeedlingsError("int8 export needs calibration images (N×S×S×3 uint8); none were given")
    work = Path(tempfile.mkdtemp(prefix="seedlings-int8-"))
    try:
        source = _preprocess_graph(fp32_path, work / "prep.onnx", log)
        session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name

        keep_float = distance_only_nodes(onnx.load(str(source)).graph)

        def write(tmp: str) -> None:
            quantize_static(str(source), tmp, _calibration_reader(images_uint8, spec, input_name),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep_float)

        atomic_write(out_path, write)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ref = _referenceonnx_probs(fp32_path, images_uint8, spec, torch_model)
    got = onnx_probs(out_path, images_uint8, spec)
    report = {
        "method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations (MinMax)",
        "calibration_images": int(len(images_uint8)),
        "max_abs_dprob_vs_fp32": float(np.abs(ref - got).max()),
        "top1_agreement_vs_fp32": float((ref.argmax(1) == got.argmax(1)).mean()),
    }
    log(f"int8 on {len(images_uint8)} calibration images: "
        f"max |Δprob| = {report['max_abs_dprob_vs_fp32']:.3g}, "
        f"top-1 agreement with fp32 = {report['top1_agreement_vs_fp32']:.1%}")
    return report
