"""ONNX export: model.onnx (+ optional int8 model.int8.onnx) and model.json with sha256 of each file.

Parity: the exported model must give the same probabilities as PyTorch on real images
(max |Δprob| < 1e-4 for fp32), else the export fails and nothing is left behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import yaml
from onnx import TensorProto, helper, numpy_helper

from seedlings.artifact import MODEL_JSON, NOVELTY, ONNX_FILES, SPLIT, WEIGHTS, ModelFile, UnknownRule
from seedlings.data import Split, Subset, prepare_folders
from seedlings.errors import SeedlingsError
from seedlings.evaluation.metrics import softmax
from seedlings.export.quantize import onnx_probs, quantize_int8
from seedlings.export.same_padding import fixed_same_padding
from seedlings.fileio import atomic_write
from seedlings.models import novelty
from seedlings.models.backend import load_network
from seedlings.preprocess import PreprocessSpec, normalize

PARITY_TOLERANCE = 1e-4
DISTANCE_TOLERANCE = 1e-3  # relative: distances are in the hundreds, float32 sums of 512 squares
OPSET = 17


def export_onnx(model, image_size: int, path: Path, outputs: tuple[str, ...] = ("logits",)) -> None:
    """``outputs``: ``logits``, plus ``distance`` when ``model`` is a novelty.WithDistance."""
    x = torch.zeros(1, 3, image_size, image_size)

    def write(tmp: str) -> None:
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        with fixed_same_padding(model, image_size):  # TF "same" padding: constant at this size
            torch.onnx.export(model, (x,), tmp, input_names=["image"], output_names=list(outputs),
                              dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                              opset_version=OPSET, dynamo=False)

    atomic_write(path, write)


def run_data(run: Path, model_file: ModelFile) -> tuple[Subset | None, Subset | None]:
    """The run's (training, validation) images as two ``Subset``s, or (None, None) when its data is not here.

    Validation is the run's split (split.json) of its data folder(s), or its --val-data folder.
    """
    try:
        data, labels = _labelled(data_folders(run, model_file), model_file)
        val_root = val_data_of(run, model_file)
        if val_root:
            val, val_labels = _labelled([val_root], model_file)
            return (Subset(data.images, labels, np.arange(len(data.files))),
                    Subset(val.images, val_labels, np.arange(len(val.files))))
        split = Split.load(run / SPLIT)
        return tuple(Subset(data.images, labels, data.subset(names)) for names in (split.train, split.val))
    except (SeedlingsError, OSError, ValueError):  # ValueError: a class the model does not know
        return None, None


def _labelled(roots: list[str], model_file: ModelFile):
    """The prepared folder(s) at the model's size (several joined as training joined them), and each cache
    row's label in the model's class order."""
    if not roots:
        raise SeedlingsError("the run records no data folder")
    spec = model_file.preprocess
    data = prepare_folders(roots, spec.image_size, spec.interpolation, progress=False)
    return data, np.asarray([model_file.classes.index(c) for c in data.classes])[data.labels]


def data_folders(run: Path, model_file: ModelFile, key: str = "data") -> list[str]:
    """The run's ``data`` folders (one, or the several it joined) or its ``val_data`` folder ([] when none):
    its config.yaml's setting, else model.json's record.

    A relative path is taken from the current folder, else from the run folder.
    """
    value = run_config(run).get(key) or model_file.training.get(key) or []
    return [_found(run, str(v)) for v in ([value] if isinstance(value, str) else value)]


def _found(run: Path, value: str) -> str:
    if not Path(value).is_absolute() and not Path(value).exists() and (run / value).exists():
        return str(run / value)
    return value


def data_folder(run: Path, model_file: ModelFile, key: str = "data") -> str | None:
    """The run's ``data`` (or ``val_data``) folder as one string, several joined by ", " (for messages)."""
    return ", ".join(data_folders(run, model_file, key)) or None


def val_data_of(run: Path, model_file: ModelFile) -> str | None:
    """The run's --val-data folder (None when it was validated on a split of its data)."""
    return data_folder(run, model_file, "val_data")


def run_config(run: Path) -> dict:
    """The run's config.yaml ({} when missing or unreadable)."""
    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def sample_images(val_set: Subset | None, image_size: int, n: int = 64,
                  train_set: Subset | None = None) -> tuple[np.ndarray, str]:
    """``n`` real validation images of the run (``run_data``'s second subset), for a run with none (``--val-fraction
    0``) training images, spread evenly over the rows, which are in class order: int8 calibrated on the first 64
    (two species) lost 0.5 points on a Lite0 fold, spread over all twelve 0.1; synthetic noise when the data is
    not here."""
    for subset, kind in ((val_set, "validation images of the run"),
                         (train_set, "training images of the run (it holds none out)")):
        if subset is not None and len(subset.rows):
            rows = subset.rows[np.unique(np.linspace(0, len(subset.rows) - 1, n).astype(int))]
            return np.asarray(subset.images[rows]), f"{len(rows)} {kind}"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (16, image_size, image_size, 3), dtype=np.uint8), "16 random images (data not found)"


def parity(model, onnx_path: Path, images: np.ndarray, spec: PreprocessSpec) -> tuple[float, float]:
    """Max |Δprob| and, for a model with a distance output, the max relative Δdistance."""
    x = normalize(images, spec)
    with torch.no_grad():
        ref = model(torch.from_numpy(x))
    ref = ref if isinstance(ref, tuple) else (ref,)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})
    dprob = float(np.abs(softmax(ref[0].double().numpy()) - softmax(got[0].astype(np.float64))).max())
    if len(ref) == 1:
        return dprob, 0.0
    want = ref[1].double().numpy()
    return dprob, float((np.abs(want - got[1]) / np.maximum(np.abs(want), 1.0)).max())


def _with_novelty(model_file: ModelFile, model, wrapped, subsets, fit_detector: bool,
                  log) -> tuple[torch.nn.Module, UnknownRule]:
    """The graph to export (the model with its feature-distance output) and the unknown rule to ship with it.

    Export packages what training wrote. A run trained before the detector existed is refused, unless
    ``fit_detector`` (``--fit-detector``) asks to fit one from the run's data for the export only (the run
    folder is left as it is)."""
    if wrapped is not None:
        return wrapped, model_file.unknown
    if not fit_detector:
        raise SeedlingsError("the run has no 'not a seedling' detector (novelty.safetensors; runs trained before "
                             "it existed). Add --fit-detector to fit one from the run's data into the exported "
                             "model, or retrain the run")
    if subsets[0] is None:
        raise SeedlingsError("--fit-detector: the run's data folder is not here (see its config.yaml 'data')")
    with tempfile.TemporaryDirectory(prefix="seedlings-novelty-") as work:
        unknown = novelty.fit_run(model, *subsets, model_file.preprocess, len(model_file.classes), Path(work),
                                  calibration=model_file.calibration, rule=model_file.unknown)
        wrapped = novelty.wrap(model, Path(work) / NOVELTY)
    log(f"fitted the feature-distance detector on {subsets[0].rows.size} training images of the run")
    return wrapped, unknown


def export_run(run: str | Path, out: str | Path, precision: str = "fp32", half: bool = False,
               log=print, fit_detector: bool = False) -> Path:
    """Write an ONNX model folder from a finished run folder (``half``: float16 weights in model.onnx)."""
    run, out = Path(run), Path(out)
    model_file = finished_run(run)
    check_precision(precision)
    model, wrapped = load_network(run, model_file)  # every file verified against model.json
    subsets = run_data(run, model_file)
    graph, unknown = _with_novelty(model_file, model, wrapped, subsets, fit_detector, log)
    exported = model_file.replace(unknown=unknown, files={}, extra={**model_file.extra, "source_run": str(run)})
    job = Export(run, out, precision, half, log, val_set=subsets[1], train_set=subsets[0])
    return write_model_folder(graph, model, exported, job)


def finished_run(run: Path) -> ModelFile:
    if not (run / MODEL_JSON).is_file() or not (run / WEIGHTS).is_file():
        raise SeedlingsError(f"{run}: not a finished run folder (needs model.json and weights.safetensors)")
    return ModelFile.load(run)


def check_precision(precision: str) -> None:
    if precision not in ("fp32", "int8"):
        raise SeedlingsError(f"--precision {precision}: choose fp32 or int8")


@dataclass
class Export:
    """Where and how to write one model folder: ``run`` holds the split.json copied beside it."""

    run: Path
    out: Path
    precision: str = "fp32"
    half: bool = False
    log: Callable[[str], object] = print
    val_set: Subset | None = None  # ``run_data``'s second subset: parity and validation images
    train_set: Subset | None = None  # its first: parity images of a run that holds none out


def write_model_folder(graph, model, model_file: ModelFile, job: Export) -> Path:
    """Export ``graph`` (``model`` plus its distance output, if any), check parity, write the folder.

    ``model`` gives the logits int8 is compared with. The folder's model.json is ``model_file``
    with the export report, the new file list and no absolute path of this machine.
    """
    out = job.out
    tmp = out.with_name(out.name + ".exporting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        report, files = _write_graphs(graph, model, model_file.preprocess, tmp, job)
        exported = model_file.replace(files={}, extra=portable({**model_file.extra, "export": report}, out))
        for name in files:
            exported.record_file(tmp, name)
        exported.save(tmp)
        if (job.run / SPLIT).is_file():  # lets `evaluate` score only the validation images
            shutil.copy2(job.run / SPLIT, tmp / SPLIT)
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _write_graphs(graph, model, spec: PreprocessSpec, tmp: Path, job: Export) -> tuple[dict, list[str]]:
    """model.onnx (parity-checked), and model.int8.onnx or float16 weights when asked: the report, the files."""
    outputs = ("logits", "distance") if graph is not model else ("logits",)
    fp32, int8 = ONNX_FILES["fp32"], ONNX_FILES["int8"]
    export_onnx(graph, spec.image_size, tmp / fp32, outputs)
    images, what = sample_images(job.val_set, spec.image_size, train_set=job.train_set)
    delta, ddist = parity(graph, tmp / fp32, images, spec)
    job.log(f"parity on {what}: max |Δprob| = {delta:.2e} (tolerance {PARITY_TOLERANCE:g})"
            + (f", max relative Δdistance = {ddist:.2e}" if len(outputs) > 1 else ""))
    if not delta < PARITY_TOLERANCE or not ddist < DISTANCE_TOLERANCE:
        raise SeedlingsError(f"ONNX output differs from PyTorch: max |Δprob| {delta:.2e} (tolerance "
                             f"{PARITY_TOLERANCE:g}), relative Δdistance {ddist:.2e} ({DISTANCE_TOLERANCE:g})")
    report = {"fp32_parity_max_abs_dprob": delta, "parity_images": what, "opset": OPSET, "outputs": list(outputs)}
    files = [fp32]
    if job.precision == "int8":
        report["int8"] = quantize_int8(tmp / fp32, tmp / int8, images, spec, model, job.log)
        files.append(int8)
    if job.half:
        report["half_weights"] = _halve(tmp / fp32, job.val_set, images, spec, job.log)
    return report, files


_RUN_KEYS = ("source_run", "run")  # run folders, found again from the model folder: kept relative to it


def portable(value, out: Path, key: str = ""):
    """``value`` (model.json's report fields) without absolute paths of this machine: a run folder
    relative to the model folder ``out``, any other path (a data folder, the command's) by its name."""
    if isinstance(value, dict):
        return {k: portable(v, out, k) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, out, key) for v in value]
    if not isinstance(value, str):
        return value
    if key in _RUN_KEYS:
        return os.path.relpath(Path(value).resolve(), out.resolve())
    return " ".join(Path(t).name if os.path.isabs(t) and len(t) > 1 else t for t in value.split(" "))


HALF_TOLERANCE = 1e-2  # max |Δprob| that rounding the weights to float16 may cause


def _halve(path: Path, val_set, images: np.ndarray, spec: PreprocessSpec, log) -> dict:
    """Replace ``path`` by its float16-weight version; measure the change on the validation images."""
    if val_set is not None and len(val_set.rows):
        images, what = np.asarray(val_set.images[val_set.rows]), "validation images"
    else:
        what = "parity images"
    before = onnx_probs(path, images, spec)
    store_weights_as_half(path)
    after = onnx_probs(path, images, spec)
    report = {"weights": "float16 (computed in float32)", "images": f"{len(images)} {what}",
              "max_abs_dprob_vs_float32_weights": float(np.abs(before - after).max()),
              "top1_changed": int((before.argmax(1) != after.argmax(1)).sum())}
    log(f"float16 weights on {report['images']}: max |Δprob| = {report['max_abs_dprob_vs_float32_weights']:.2e}, "
        f"top-1 changed for {report['top1_changed']}")
    if not report["max_abs_dprob_vs_float32_weights"] < HALF_TOLERANCE:
        raise SeedlingsError(f"float16 weights move the probabilities by up to "
                             f"{report['max_abs_dprob_vs_float32_weights']:.2e} (tolerance {HALF_TOLERANCE:g}); "
                             "export without --half-weights")
    return report


def store_weights_as_half(path: Path) -> None:
    """Store the graph's float32 weights as float16, each followed by a Cast back to float32.

    Half the file size. ONNX Runtime folds the casts when it loads the model, so it still
    computes in float32 (with weights rounded to float16: measured by _halve).
    """
    proto = onnx.load(str(path))
    graph, casts = proto.graph, []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < 16:
            continue
        name = init.name
        init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{name}.fp16"))
        casts.append(helper.make_node("Cast", [f"{name}.fp16"], [name], to=TensorProto.FLOAT,
                                      name=f"{name}.cast"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    atomic_write(path, lambda tmp: onnx.save(proto, tmp))


def _replace_folder(tmp: Path, out: Path) -> None:
    if out.exists():
        if out.is_dir() and (not any(out.iterdir()) or (out / MODEL_JSON).exists()):
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
            return
        raise SeedlingsError(f"--out {out}: exists and is not a model folder; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
