"""ONNX export: model.onnx (+ optional int8 model.int8.onnx) and model.json with sha256 of each file.

Parity: the exported model must give the same probabilities as PyTorch on real images
(max |Δprob| < 1e-4 for fp32), else the export fails and nothing is left behind.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from seedlings.errors import SeedlingsError
from seedlings.fileio import atomic_write, atomic_write_json, sha256_file
from seedlings.inference import load_metadata
from seedlings.models import create_model
from seedlings.models.checkpoint import load_weights
from seedlings.preprocess import PreprocessSpec, normalize

PARITY_TOLERANCE = 1e-4
DISTANCE_TOLERANCE = 1e-3  # relative: distances are in the hundreds, float32 sums of 512 squares
OPSET = 17


def load_run_model(run: Path, meta: dict):
    model = create_model(meta["backbone"], len(meta["classes"]))
    model.load_state_dict(load_weights(run / "weights.safetensors"))
    return model.eval()


def export_onnx(model, image_size: int, path: Path, outputs: tuple[str, ...] = ("logits",)) -> None:
    """``outputs``: ``logits``, plus ``distance`` when ``model`` is a novelty.WithDistance."""
    x = torch.zeros(1, 3, image_size, image_size)

    def write(tmp: str) -> None:
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(model, (x,), tmp, input_names=["image"], output_names=list(outputs),
                          dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in outputs}},
                          opset_version=OPSET, dynamo=False)

    atomic_write(path, write)


def run_data(run: Path, meta: dict):
    """The run's (training, validation) images as two ``Subset``s, or (None, None) when its data is not here.

    Validation is the run's split (split.json) of its data folder, or its --val-data folder.
    """
    from seedlings.data import Split, prepare
    from seedlings.training.fit import Subset

    training, classes, size = meta.get("training", {}), meta["classes"], meta["image_size"]
    try:
        data = prepare(training["data"], size, progress=False)
        labels = np.asarray([classes.index(c) for c in data.classes])[data.labels]
        val_root = val_data_of(run, meta)
        if val_root:
            val = prepare(val_root, size, progress=False)
            val_labels = np.asarray([classes.index(c) for c in val.classes])[val.labels]
            return (Subset(data.images, labels, np.arange(len(data.files))),
                    Subset(val.images, val_labels, np.arange(len(val.files))))
        split = Split.load(run / "split.json")
        return tuple(Subset(data.images, labels, data.subset(names)) for names in (split.train, split.val))
    except (SeedlingsError, KeyError, OSError, ValueError):  # ValueError: a class the model does not know
        return None, None


def val_data_of(run: Path, meta: dict) -> str | None:
    """The run's --val-data folder (model.json, or config.yaml for runs from before it recorded it)."""
    return meta.get("training", {}).get("val_data") or run_config(run).get("val_data")


def run_config(run: Path) -> dict:
    """The run's config.yaml ({} when missing or unreadable)."""
    import yaml

    try:
        cfg = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def sample_images(val_set, meta: dict, n: int = 64) -> tuple[np.ndarray, str]:
    """Real validation images of the run (``run_data``'s second subset); synthetic noise when unavailable."""
    if val_set is not None and len(val_set.rows):
        rows = val_set.rows[:n]
        return np.asarray(val_set.images[rows]), f"{len(rows)} validation images of the run"
    rng = np.random.default_rng(0)
    size = meta["image_size"]
    return rng.integers(0, 256, (16, size, size, 3), dtype=np.uint8), "16 random images (data not found)"


def parity(model, onnx_path: Path, images: np.ndarray, spec: PreprocessSpec) -> tuple[float, float]:
    """Max |Δprob| and, for a model with a distance output, the max relative Δdistance."""
    import onnxruntime as ort

    from seedlings.evaluation.metrics import softmax

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


def _with_novelty(run: Path, meta: dict, model, subsets, log):
    """The model with its feature-distance output; fitted now for runs trained before it existed."""
    from seedlings.training import novelty

    wrapped = novelty.wrap(model, run)
    if wrapped is None and "distance_threshold" not in meta.get("unknown", {}):
        if subsets[0] is None:
            log("no feature-distance detector: the run has none and its data folder is not here")
            return model
        spec = PreprocessSpec.from_dict(meta["preprocess"])
        meta["unknown"] = {**meta.get("unknown", {}), **novelty.fit_run(model, *subsets, spec,
                                                                         len(meta["classes"]), run),
                           "method": "max_probability+feature_distance"}
        path = run / novelty.NOVELTY_FILE
        meta.setdefault("files", {})[path.name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        atomic_write_json(run / "model.json", meta)
        log(f"fitted the feature-distance detector on {subsets[0].rows.size} training images of the run")
        wrapped = novelty.wrap(model, run)
    return wrapped if wrapped is not None else model


def export_run(run: str | Path, out: str | Path, precision: str = "fp32", half: bool = False,
               log=print) -> Path:
    """Write an ONNX model folder from a finished run folder (``half``: float16 weights in model.onnx)."""
    run, out = Path(run), Path(out)
    meta = finished_run(run)
    check_precision(precision)
    spec = PreprocessSpec.from_dict(meta["preprocess"])
    model = load_run_model(run, meta)
    subsets = run_data(run, meta)
    graph = _with_novelty(run, meta, model, subsets, log)
    meta["source_run"] = str(run.resolve())
    return write_model_folder(graph, model, meta, spec, run, out, precision, half, log, subsets[1])


def finished_run(run: Path) -> dict:
    meta = load_metadata(run) if (run / "model.json").is_file() else None
    if meta is None or not (run / "weights.safetensors").is_file():
        raise SeedlingsError(f"{run}: not a finished run folder (needs model.json and weights.safetensors)")
    return meta


def check_precision(precision: str) -> None:
    if precision not in ("fp32", "int8"):
        raise SeedlingsError(f"--precision {precision}: choose fp32 or int8")


def write_model_folder(graph, model, meta: dict, spec: PreprocessSpec, run: Path, out: Path, precision: str,
                       half: bool, log, val_set=None) -> Path:
    """Export ``graph`` (``model`` plus its distance output, if any), check parity, write the folder.

    ``model`` gives the logits int8 is compared with; ``val_set`` (``run_data``'s second subset) the
    parity and validation images; ``run`` its split.json.
    """
    tmp = out.with_name(out.name + ".exporting")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        outputs = ("logits", "distance") if graph is not model else ("logits",)
        export_onnx(graph, spec.image_size, tmp / "model.onnx", outputs)
        images, what = sample_images(val_set, meta)
        delta, ddist = parity(graph, tmp / "model.onnx", images, spec)
        log(f"parity on {what}: max |Δprob| = {delta:.2e} (tolerance {PARITY_TOLERANCE:g})"
            + (f", max relative Δdistance = {ddist:.2e}" if len(outputs) > 1 else ""))
        if not delta < PARITY_TOLERANCE or not ddist < DISTANCE_TOLERANCE:
            raise SeedlingsError(f"ONNX output differs from PyTorch: max |Δprob| {delta:.2e} (tolerance "
                                 f"{PARITY_TOLERANCE:g}), relative Δdistance {ddist:.2e} ({DISTANCE_TOLERANCE:g})")
        files = ["model.onnx"]
        meta["export"] = {"fp32_parity_max_abs_dprob": delta, "parity_images": what, "opset": OPSET,
                          "outputs": list(outputs)}
        if precision == "int8":
            from seedlings.export.quantize import quantize_int8

            meta["export"]["int8"] = quantize_int8(tmp / "model.onnx", tmp / "model.int8.onnx", images, spec,
                                                   model, log)
            files.append("model.int8.onnx")
        if half:
            meta["export"]["half_weights"] = _halve(tmp / "model.onnx", val_set, images, spec, log)
        meta["files"] = {f: {"sha256": sha256_file(tmp / f), "bytes": (tmp / f).stat().st_size} for f in files}
        atomic_write_json(tmp / "model.json", meta)
        if (run / "split.json").is_file():  # lets `evaluate` score only the validation images
            shutil.copy2(run / "split.json", tmp / "split.json")
        _replace_folder(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


HALF_TOLERANCE = 1e-2  # max |Δprob| that rounding the weights to float16 may cause


def _halve(path: Path, val_set, images: np.ndarray, spec: PreprocessSpec, log) -> dict:
    """Replace ``path`` by its float16-weight version; measure the change on the validation images."""
    from seedlings.export.quantize import onnx_probs

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
    import onnx
    from onnx import TensorProto, helper, numpy_helper

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
        if out.is_dir() and (not any(out.iterdir()) or (out / "model.json").exists()):
            old = out.with_name(out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
            return
        raise SeedlingsError(f"--out {out}: exists and is not a model folder; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
