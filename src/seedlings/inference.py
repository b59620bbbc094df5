"""The model API without torch: load a model folder and predict (behind `predict`, `evaluate` and the service).

A model folder holds ``model.json`` (the :class:`~seedlings.artifact.ModelFile`) and ``model.onnx``,
run here by ONNX Runtime. A training run folder holds ``weights.safetensors`` instead: its backend
(``seedlings.models.backend.TorchBackend``) lives with the models, and ``seedlings.load_model``
(seedlings/api.py) picks it. Nothing here imports torch, so the service can import this module.
Every file listed in ``model.json`` is checked against its sha256 before it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from seedlings.artifact import MODEL_JSON, ONNX_FILES, WEIGHTS, ModelFile
from seedlings.errors import ImageError, SeedlingsError, UsageError, missing_extra
from seedlings.images import DEFAULT_MAX_PIXELS, is_image_name, open_image
from seedlings.preprocess import dihedral_views, normalize, resize_square

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"


@dataclass
class Prediction:
    species: str
    confidence: float
    unknown: bool
    top_k: list[dict] = field(default_factory=list)  # [{"species", "probability"}]
    file: str | None = None

    def to_dict(self) -> dict:
        d = {"species": self.species, "confidence": self.confidence, "unknown": self.unknown,
             "top_k": self.top_k}
        if self.file is not None:
            d["file"] = self.file
        return d


class Backend(Protocol):
    """What runs the network: normalised float32 N×3×S×S in, logits (and distances) out."""

    name: str
    has_distance: bool

    def __call__(self, x: np.ndarray) -> np.ndarray: ...

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]: ...


def resolve_model_dir(path: str | Path | None) -> Path:
    """``None`` means the default model shipped in the package."""
    if path is None:
        if not (DEFAULT_MODEL_DIR / MODEL_JSON).is_file():
            raise SeedlingsError(f"{DEFAULT_MODEL_DIR}: this build ships no default model; "
                                 "pass --model MODEL_DIR (an exported model or a finished run folder)")
        return DEFAULT_MODEL_DIR
    p = Path(path).expanduser()
    if not p.exists():
        raise SeedlingsError(f"--model {p}: no such folder")
    if not (p / MODEL_JSON).is_file():
        hint = " (the run has not finished: `seedlings train --resume`)" if (p / "checkpoint.safetensors").exists() \
            else ""
        raise SeedlingsError(f"--model {p}: no model.json here{hint}; pass a model folder from "
                             "`seedlings export` or a finished training run folder")
    return p


def needs_torch(model_dir: Path, backend: str = "auto", precision: str = "fp32") -> bool:
    """Whether loading ``model_dir`` this way takes the PyTorch backend (a run folder without ONNX)."""
    if precision != "fp32":
        return False  # int8 exists only as ONNX
    if backend == "torch":
        return True
    return (backend == "auto" and not (model_dir / ONNX_FILES["fp32"]).is_file()
            and (model_dir / WEIGHTS).is_file())


class OnnxBackend:
    """An ONNX Runtime session. ``spinning=False`` suits servers: ONNX Runtime's threads otherwise
    spin-wait between runs and burn the cores that decode uploads (measured on 2 CPUs: ~7 ms of CPU
    per request, a third of the throughput)."""

    name = "onnx"

    def __init__(self, path: Path, threads: int | None = None, spinning: bool = True):
        try:
            import onnxruntime as ort  # lazy: `import seedlings` stays light; onnxruntime is an extra
        except ImportError as exc:
            raise missing_extra("serve", "onnxruntime") from exc
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.has_distance = len(self.session.get_outputs()) > 1

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Logits and, when the model has the feature-distance output, each image's distance."""
        out = self.session.run(None, {self.input_name: x})
        return out[0], (out[1] if self.has_distance else None)


class Model:
    """A loaded classifier: ``predict`` takes paths, folders, bytes, PIL images or arrays.

    ``backend``: ``"auto"`` or ``"onnx"`` (ONNX Runtime), or a ready :class:`Backend` such as
    ``seedlings.models.backend.TorchBackend`` (``seedlings.load_model`` passes one for run folders).
    """

    def __init__(self, model_dir: Path, backend: str | Backend = "auto", precision: str = "fp32",
                 threads: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, spinning: bool = True):
        self.dir = Path(model_dir)
        self.file = ModelFile.load(self.dir)
        self.classes: list[str] = list(self.file.classes)
        self.spec = self.file.preprocess
        self.max_pixels = max_pixels
        self.precision = precision
        self.spinning = spinning
        self.backend_name, self.backend = self._backend(backend, precision, threads)

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def version(self) -> str:
        return self.file.version

    def _backend(self, backend: str | Backend, precision: str, threads) -> tuple[str, Backend]:
        if not isinstance(backend, str):
            return backend.name, backend
        if precision not in ONNX_FILES:
            raise UsageError(f"--precision {precision!r}: choose fp32 or int8")
        onnx_name = ONNX_FILES[precision]
        if backend in ("auto", "onnx") and (self.dir / onnx_name).is_file():
            return "onnx", OnnxBackend(self.file.verify_file(self.dir, onnx_name), threads, self.spinning)
        if backend == "onnx" or precision == "int8":
            raise SeedlingsError(f"{self.dir}: no {onnx_name}; run `seedlings export` "
                                 f"{'--precision int8 ' if precision == 'int8' else ''}first")
        if (self.dir / WEIGHTS).is_file():
            raise SeedlingsError(f"{self.dir}: holds PyTorch weights only; load it with seedlings.load_model "
                                 f"(needs the train extra) or run `seedlings export {self.dir}`")
        raise SeedlingsError(f"{self.dir}: neither model.onnx nor weights.safetensors found")

    # -- arrays in, probabilities out -------------------------------------------------------------
    def prepare(self, source, name: str | None = None) -> np.ndarray:
        """One input → the uint8 S×S×3 array the model sees (raises ImageError)."""
        img = open_image(source, max_pixels=self.max_pixels, name=name)
        return resize_square(img, self.spec.image_size, self.spec.interpolation)

    def probabilities(self, batch_hwc: np.ndarray, tta: bool = False, batch_size: int = 64) -> np.ndarray:
        """Calibrated class probabilities for a uint8 N×S×S×3 batch (mean over 8 views with ``tta``)."""
        return self.assess(batch_hwc, tta, batch_size)[0]

    def assess(self, batch_hwc: np.ndarray, tta: bool = False,
               batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and each image's feature distance to the nearest species (None when the
        model has no distance output); with ``tta`` both are means over the 8 views."""
        probs, dists = [], []
        calibration = self.file.calibration
        for i in range(0, len(batch_hwc), batch_size):
            chunk = batch_hwc[i:i + batch_size]
            views = [self.backend.scores(normalize(v, self.spec)) for v in (dihedral_views(chunk) if tta else [chunk])]
            probs.append(np.mean([calibration.probabilities(lg.astype(np.float64)) for lg, _ in views], axis=0))
            if self.backend.has_distance:
                dists.append(np.mean([d.astype(np.float64) for _, d in views], axis=0))
        if not probs:
            return np.zeros((0, len(self.classes))), (np.zeros(0) if self.backend.has_distance else None)
        return np.concatenate(probs), (np.concatenate(dists) if self.backend.has_distance else None)

    def unknown(self, probs: np.ndarray, distance: np.ndarray | None = None) -> np.ndarray:
        """Which images not to trust: the model file's :class:`~seedlings.artifact.UnknownRule`."""
        return self.file.unknown.flags(probs, distance)

    def to_predictions(self, probs: np.ndarray, top_k: int = 5, files=None,
                       distance: np.ndarray | None = None) -> list[Prediction]:
        k = max(1, min(top_k, len(self.classes)))
        flags = self.unknown(probs, distance)
        preds = []
        for i, p in enumerate(probs):
            order = np.argsort(-p)[:k]
            best = int(order[0])
            preds.append(Prediction(
                species=self.classes[best], confidence=float(p[best]), unknown=bool(flags[i]),
                top_k=[{"species": self.classes[j], "probability": float(p[j])} for j in order],
                file=None if files is None else files[i]))
        return preds

    def predict(self, inputs, top_k: int = 5, tta: bool = False) -> list[Prediction]:
        """Predict one or many inputs; a folder expands to its images. Unreadable inputs raise."""
        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        arrays, names = [], []
        for item in items:
            for source, label in expand_inputs(item):
                arrays.append(self.prepare(source, label))
                names.append(label)
        if not arrays:
            return []
        probs, distance = self.assess(np.stack(arrays), tta)
        return self.to_predictions(probs, top_k, names, distance)


def expand_inputs(item):
    """(source, label) pairs: a folder gives its images (recursively, sorted)."""
    if isinstance(item, (str, Path)):
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f.name)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not files:
                raise ImageError("folder holds no images (PNG, JPEG, WebP, BMP, TIFF)", "no_images", str(p))
            return [(f, str(f)) for f in files]
        return [(p, str(p))]
    return [(item, None)]
