"""Load a model folder and predict: the Python API behind `predict`, `evaluate` and the service.

A model folder holds ``model.json`` and ``model.onnx`` (served by ONNX Runtime, no torch) and/or
``weights.safetensors`` (a training run folder; needs the ``train`` extra). Every file listed in
``model.json`` is checked against its sha256 before it is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seedlings.errors import ImageError, SeedlingsError, UsageError, missing_extra
from seedlings.fileio import read_json, sha256_file
from seedlings.images import DEFAULT_MAX_PIXELS, is_image_name, open_image
from seedlings.preprocess import PreprocessSpec, dihedral_views, normalize, resize_square

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}
SUPPORTED_MODEL_FORMAT = 1


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


def resolve_model_dir(path: str | Path | None) -> Path:
    """``None`` means the default model shipped in the package."""
    if path is None:
        if not (DEFAULT_MODEL_DIR / "model.json").is_file():
            raise SeedlingsError(f"{DEFAULT_MODEL_DIR}: this build ships no default model; "
                                 "pass --model MODEL_DIR (an exported model or a finished run folder)")
        return DEFAULT_MODEL_DIR
    p = Path(path).expanduser()
    if not p.exists():
        raise SeedlingsError(f"--model {p}: no such folder")
    if not (p / "model.json").is_file():
        hint = " (the run has not finished: `seedlings train --resume`)" if (p / "checkpoint.safetensors").exists() \
            else ""
        raise SeedlingsError(f"--model {p}: no model.json here{hint}; pass a model folder from "
                             "`seedlings export` or a finished training run folder")
    return p


def load_metadata(model_dir: Path) -> dict:
    meta = read_json(model_dir / "model.json", "model.json")
    fmt = meta.get("format")
    if fmt != SUPPORTED_MODEL_FORMAT:
        from seedlings import __version__

        raise SeedlingsError(f"{model_dir / 'model.json'}: model format {fmt} (seedlings "
                             f"{meta.get('seedlings_version')}) is not supported by seedlings {__version__} "
                             f"(format {SUPPORTED_MODEL_FORMAT}); re-export it with this version")
    for key in ("classes", "preprocess", "backbone"):
        if key not in meta:
            raise SeedlingsError(f"{model_dir / 'model.json'}: lacks '{key}'; re-export the model")
    return meta


def verify_file(model_dir: Path, name: str, meta: dict) -> Path:
    path = model_dir / name
    entry = meta.get("files", {}).get(name)
    if entry is None:
        raise SeedlingsError(f"{path}: not listed in model.json 'files'; refusing to load an unverified file")
    if not path.is_file():
        raise SeedlingsError(f"{path}: listed in model.json but missing")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise SeedlingsError(f"{path}: sha256 {digest[:12]}… does not match model.json "
                             f"({entry['sha256'][:12]}…); the file is corrupt or was replaced. Refusing to load")
    return path


class OnnxBackend:
    """An ONNX Runtime session. ``spinning=False`` suits servers: ONNX Runtime's threads otherwise
    spin-wait between runs and burn the cores that decode uploads (measured on 2 CPUs: ~7 ms of CPU
    per request, a third of the throughput)."""

    def __init__(self, path: Path, threads: int | None = None, spinning: bool = True):
        try:
            import onnxruntime as ort
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


class TorchBackend:
    def __init__(self, path: Path, meta: dict, threads: int | None = None):
        try:
            import torch
        except ImportError as exc:
            raise missing_extra("train", "torch") from exc
        from seedlings.models import create_model
        from seedlings.models.checkpoint import load_weights
        from seedlings.training import novelty

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.model = create_model(meta["backbone"], len(meta["classes"]))
        self.model.load_state_dict(load_weights(path))
        self.model.eval()
        if (path.parent / novelty.NOVELTY_FILE).is_file():
            verify_file(path.parent, novelty.NOVELTY_FILE, meta)
        self.with_distance = novelty.wrap(self.model, path.parent)
        self.has_distance = self.with_distance is not None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.torch.no_grad():
            return self.model(self.torch.from_numpy(x)).float().numpy()

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.has_distance:
            return self(x), None
        with self.torch.no_grad():
            logits, distance = self.with_distance(self.torch.from_numpy(x))
        return logits.float().numpy(), distance.float().numpy()


class Model:
    """A loaded classifier: ``predict`` takes paths, folders, bytes, PIL images or arrays."""

    def __init__(self, model_dir: Path, backend: str = "auto", precision: str = "fp32",
                 threads: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, spinning: bool = True):
        self.dir = model_dir
        self.meta = load_metadata(model_dir)
        self.classes: list[str] = list(self.meta["classes"])
        self.spec = PreprocessSpec.from_dict(self.meta["preprocess"])
        self.temperature = float(self.meta.get("calibration", {}).get("temperature", 1.0))
        self.threshold = float(self.meta.get("unknown", {}).get("threshold", 0.0))
        limit = self.meta.get("unknown", {}).get("distance_threshold")
        self.distance_threshold = None if limit is None else float(limit)
        self.max_pixels = max_pixels
        self.precision = precision
        self.spinning = spinning
        self.backend_name, self.run = self._backend(backend, precision, threads)

    @property
    def name(self) -> str:
        return self.meta.get("name", self.dir.name)

    @property
    def version(self) -> str:
        return str(self.meta.get("version", "0"))

    def _backend(self, backend: str, precision: str, threads):
        if precision not in ONNX_FILES:
            raise UsageError(f"--precision {precision!r}: choose fp32 or int8")
        onnx_name = ONNX_FILES[precision]
        if backend in ("auto", "onnx") and (self.dir / onnx_name).is_file():
            return "onnx", OnnxBackend(verify_file(self.dir, onnx_name, self.meta), threads, self.spinning)
        if backend == "onnx" or precision == "int8":
            raise SeedlingsError(f"{self.dir}: no {onnx_name}; run `seedlings export` "
                                 f"{'--precision int8 ' if precision == 'int8' else ''}first")
        if (self.dir / "weights.safetensors").is_file():
            return "torch", TorchBackend(verify_file(self.dir, "weights.safetensors", self.meta), self.meta, threads)
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
        from seedlings.evaluation.metrics import softmax

        probs, dists = [], []
        for i in range(0, len(batch_hwc), batch_size):
            chunk = batch_hwc[i:i + batch_size]
            views = [self.run.scores(normalize(v, self.spec)) for v in (dihedral_views(chunk) if tta else [chunk])]
            probs.append(np.mean([softmax(lg.astype(np.float64), self.temperature) for lg, _ in views], axis=0))
            if self.run.has_distance:
                dists.append(np.mean([d.astype(np.float64) for _, d in views], axis=0))
        if not probs:
            return np.zeros((0, len(self.classes))), (np.zeros(0) if self.run.has_distance else None)
        return np.concatenate(probs), (np.concatenate(dists) if self.run.has_distance else None)

    def unknown(self, probs: np.ndarray, distance: np.ndarray | None = None) -> np.ndarray:
        """Which images not to trust: the model is unsure (max probability under its threshold), or
        the image's features are far from every species (distance over its threshold)."""
        flags = probs.max(axis=1) < self.threshold if len(probs) else np.zeros(0, bool)
        if distance is not None and self.distance_threshold is not None:
            flags = flags | (distance > self.distance_threshold)
        return flags

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


def load_model(path: str | Path | None = None, backend: str = "auto", precision: str = "fp32",
               threads: int | None = None) -> Model:
    """Load a model folder (``None``: the default model shipped in the package)."""
    return Model(resolve_model_dir(path), backend=backend, precision=precision, threads=threads)
