"""The model file: ``model.json`` as one typed, validated object. Every writer and reader goes through it.

A model folder (a finished run, or ``seedlings export``'s output) holds ``model.json`` and the
weight files it lists with their sha256. This module owns that file: which fields it has, what
each may hold, how the ``unknown`` rule is applied, and how a listed file is verified. It imports
no torch, so the service and the CLI share it.

Fields (format 1)::

    format              1
    name, version       shown by the service (GET /v1/model, v2 metadata)
    backbone, timm_name the architecture (models/registry.py names)
    classes             species in output order
    preprocess          the PreprocessSpec: image_size, mean, std, interpolation, resize, layout
    image_size          = preprocess.image_size (kept for readers of format 1; never differs)
    calibration         {"method": "temperature", "temperature": T, …}
    unknown             {"method", "threshold", "distance_threshold"?, …}: see UnknownRule
    files               {file name: {"sha256", "bytes"}}: only listed files are ever loaded
    init                where the initial weights came from ({"kind": "imagenet", package, version,
                        sha256, licence} | {"kind": "model", …} | {"kind": "scratch"})
    metrics, training, export, ensemble, params, created, seedlings_version, source_run: reports,
                        kept as they are (``extra``)
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seedlings import __version__
from seedlings.errors import SeedlingsError
from seedlings.fileio import atomic_write_json, sha256_file
from seedlings.preprocess import IMAGE_SIZES, INTERPOLATIONS, PreprocessSpec

FORMAT = 1
# The files of a model folder are named here and nowhere else: every reader and writer imports these.
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"  # run folders: the shipped network's weights (torch)
NOVELTY = "novelty.safetensors"  # run folders: the "not a seedling" detector's class statistics
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}  # exported folders, by --precision
SPLIT = "split.json"  # the run's validation split (evaluate scores only those images)
VAL_PREDICTIONS = "val_predictions.csv"  # run folders: calibrated probabilities of every validation image
UNKNOWN_METHOD = "max_probability+mahalanobis+cosine"  # models/novelty.py
LEGACY_DISTANCE_METHOD = "max_probability+feature_distance"  # files fitted before the cosine distance
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CORE = ("format", "name", "version", "backbone", "timm_name", "classes", "preprocess", "image_size",
         "calibration", "unknown", "files", "init")


class ModelFileError(SeedlingsError):
    """model.json is unusable; the message names the file and the field."""


@dataclass
class UnknownRule:
    """When not to trust a prediction: max probability under ``threshold``, or (for models with a
    feature-distance output) the image's distance to the nearest species over ``distance_threshold``."""

    threshold: float = 0.0
    distance_threshold: float | None = None
    method: str = "max_probability"
    extra: dict = field(default_factory=dict)  # how the thresholds were chosen (rates on validation…)

    def flags(self, probs: np.ndarray, distance: np.ndarray | None = None) -> np.ndarray:
        """Which images not to trust: either signal of :meth:`signals` raised."""
        unsure, far = self.signals(probs, distance)
        return unsure if far is None else unsure | far

    def signals(self, probs: np.ndarray, distance: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Each signal on its own: max probability under ``threshold``; distance over ``distance_threshold``
        (None when the model has no distance output or no distance threshold)."""
        unsure = probs.max(axis=1) < self.threshold if len(probs) else np.zeros(0, bool)
        if distance is None or self.distance_threshold is None:
            return unsure, None
        return unsure, distance > self.distance_threshold

    def to_dict(self) -> dict:
        d = {**self.extra, "method": self.method, "threshold": self.threshold}
        if self.distance_threshold is not None:
            d["distance_threshold"] = self.distance_threshold
        return d

    @classmethod
    def from_dict(cls, d, where: str) -> UnknownRule:
        d = _mapping(d, where)
        dist = d.get("distance_threshold")
        method = d.get("method", LEGACY_DISTANCE_METHOD if dist is not None else "max_probability")
        if not isinstance(method, str):
            raise ModelFileError(f"{where}.method: expected a string, got {method!r}")
        return cls(threshold=_number(d.get("threshold", 0.0), f"{where}.threshold", 0.0, 1.0),
                   distance_threshold=None if dist is None else _number(dist, f"{where}.distance_threshold", 0.0),
                   method=method,
                   extra={k: v for k, v in d.items() if k not in ("threshold", "distance_threshold", "method")})


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Calibration:
    """Temperature scaling fitted on validation: probabilities = softmax(logits / temperature)."""

    temperature: float = 1.0
    extra: dict = field(default_factory=dict)  # how it was fitted (ECE before/after, n…)

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        return softmax(logits, self.temperature)

    def to_dict(self) -> dict:
        return {"method": "temperature", **self.extra, "temperature": self.temperature}

    @classmethod
    def from_dict(cls, d, where: str) -> Calibration:
        d = _mapping(d, where)
        temperature = _number(d.get("temperature", 1.0), f"{where}.temperature", 1e-6)
        return cls(temperature, {k: v for k, v in d.items() if k not in ("temperature", "method")})


@dataclass
class FileEntry:
    sha256: str
    bytes: int | None = None

    def to_dict(self) -> dict:
        return {"sha256": self.sha256, **({"bytes": self.bytes} if self.bytes is not None else {})}


@dataclass
class ModelFile:
    """A model folder's ``model.json``. ``load`` validates every field; ``save`` writes it atomically."""

    name: str
    backbone: str
    classes: list[str]
    preprocess: PreprocessSpec
    version: str = "0"
    timm_name: str | None = None
    calibration: Calibration = field(default_factory=Calibration)
    unknown: UnknownRule = field(default_factory=UnknownRule)
    files: dict[str, FileEntry] = field(default_factory=dict)
    init: dict = field(default_factory=lambda: {"kind": "scratch"})
    extra: dict = field(default_factory=dict)  # metrics, training, export, ensemble, params, created…
    path: Path | None = field(default=None, compare=False)  # where it was loaded from

    # -- reading ----------------------------------------------------------------------------------
    @property
    def image_size(self) -> int:
        return self.preprocess.image_size

    @property
    def metrics(self) -> dict:
        return self.extra.get("metrics", {})

    @property
    def training(self) -> dict:
        return self.extra.get("training", {})

    def get(self, key: str, default=None):
        """A report field (``metrics``, ``training``, ``export``…) or a core field as JSON."""
        if key in _CORE:
            return self.to_dict().get(key, default)
        return self.extra.get(key, default)

    @classmethod
    def load(cls, model_dir: str | Path) -> ModelFile:
        path = Path(model_dir) / MODEL_JSON
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            raise ModelFileError(f"{path}: no such file; pass a model folder from `seedlings export` or a "
                                 "finished training run folder") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelFileError(f"{path}: cannot be read ({exc})") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModelFileError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg}); re-export the "
                                 "model") from exc
        model = cls.from_dict(data, str(path))
        model.path = path
        return model

    @classmethod
    def from_dict(cls, d, where: str = MODEL_JSON) -> ModelFile:
        d = _mapping(d, where, "re-export the model")
        fmt = d.get("format")
        if fmt != FORMAT:
            raise ModelFileError(f"{where}: model format {fmt!r} (seedlings {d.get('seedlings_version')}) is not "
                                 f"supported by seedlings {__version__} (format {FORMAT}); re-export it with this "
                                 "version")
        for key in ("classes", "preprocess", "backbone"):
            if key not in d:
                raise ModelFileError(f"{where}: lacks '{key}'; re-export the model")
        preprocess = _preprocess(d["preprocess"], f"{where}: preprocess")
        if "image_size" in d and d["image_size"] != preprocess.image_size:
            raise ModelFileError(f"{where}: image_size {d['image_size']!r} differs from preprocess.image_size "
                                 f"{preprocess.image_size}; re-export the model")
        return cls(
            name=_string(d.get("name", "seedlings"), f"{where}: name"),
            version=str(d.get("version", "0")),
            backbone=_string(d["backbone"], f"{where}: backbone"),
            timm_name=d.get("timm_name"),
            classes=_classes(d["classes"], f"{where}: classes"),
            preprocess=preprocess,
            calibration=Calibration.from_dict(d.get("calibration", {}), f"{where}: calibration"),
            unknown=UnknownRule.from_dict(d.get("unknown", {}), f"{where}: unknown"),
            files=_files(d.get("files", {}), f"{where}: files"),
            init=_mapping(d.get("init", {"kind": "scratch"}), f"{where}: init"),
            extra={k: v for k, v in d.items() if k not in _CORE},
        )

    # -- writing ----------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = {"format": FORMAT, "name": self.name, "version": self.version, "backbone": self.backbone,
             "timm_name": self.timm_name, "image_size": self.image_size, "preprocess": _json_spec(self.preprocess),
             "classes": list(self.classes), "calibration": self.calibration.to_dict(),
             "unknown": self.unknown.to_dict(), "init": self.init,
             "files": {k: v.to_dict() for k, v in self.files.items()}}
        return {**d, **{k: v for k, v in self.extra.items() if k not in d}}

    def save(self, model_dir: str | Path) -> Path:
        self.from_dict(self.to_dict(), str(Path(model_dir) / MODEL_JSON))  # never write what load refuses
        return atomic_write_json(Path(model_dir) / MODEL_JSON, self.to_dict())

    def record_file(self, model_dir: str | Path, name: str) -> None:
        """List ``name`` (a file in ``model_dir``) with its sha256 and size."""
        path = Path(model_dir) / name
        self.files[name] = FileEntry(sha256_file(path), path.stat().st_size)

    def verify_file(self, model_dir: str | Path, name: str) -> Path:
        """The path of a listed file whose sha256 matches; anything else is refused."""
        path = Path(model_dir) / name
        entry = self.files.get(name)
        if entry is None:
            raise ModelFileError(f"{path}: not listed in model.json 'files'; refusing to load an unverified file")
        if not path.is_file():
            raise ModelFileError(f"{path}: listed in model.json but missing")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ModelFileError(f"{path}: sha256 {digest[:12]}… does not match model.json ({entry.sha256[:12]}…); "
                                 "the file is corrupt or was replaced. Refusing to load")
        return path

    def replace(self, **changes) -> ModelFile:
        return dataclasses.replace(self, **changes)


def _json_spec(spec: PreprocessSpec) -> dict:
    d = spec.to_dict()
    return {**d, "mean": list(d["mean"]), "std": list(d["std"])}


# -- field checks -----------------------------------------------------------------------------------
def _mapping(d, where: str, todo: str = "fix or re-export the model") -> dict:
    if not isinstance(d, dict):
        raise ModelFileError(f"{where}: expected a JSON object, got {type(d).__name__}; {todo}")
    return d


def _number(v, where: str, low: float | None = None, high: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ModelFileError(f"{where}: expected a number, got {v!r}")
    if (low is not None and v < low) or (high is not None and v > high):
        raise ModelFileError(f"{where}: {v!r} is outside [{low}, {high if high is not None else '∞'}]")
    return float(v)


def _string(v, where: str) -> str:
    if not isinstance(v, str) or not v:
        raise ModelFileError(f"{where}: expected a non-empty string, got {v!r}")
    return v


def _classes(v, where: str) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(c, str) and c for c in v):
        raise ModelFileError(f"{where}: expected a non-empty list of species names, got {str(v)[:80]}")
    if len(set(v)) != len(v):
        raise ModelFileError(f"{where}: names repeat ({', '.join(sorted({c for c in v if v.count(c) > 1}))})")
    return list(v)


def _preprocess(d, where: str) -> PreprocessSpec:
    d = _mapping(d, where)
    size = d.get("image_size")
    if isinstance(size, bool) or not isinstance(size, int) or not IMAGE_SIZES[0] <= size <= IMAGE_SIZES[1]:
        raise ModelFileError(f"{where}.image_size: expected a whole number of pixels in [{IMAGE_SIZES[0]}, "
                             f"{IMAGE_SIZES[1]}], got {size!r}")
    for key in ("mean", "std"):
        v = d.get(key, [0.5, 0.5, 0.5])
        if not isinstance(v, (list, tuple)) or len(v) != 3:
            raise ModelFileError(f"{where}.{key}: expected 3 numbers (R, G, B), got {v!r}")
        for i, x in enumerate(v):
            _number(x, f"{where}.{key}[{i}]", 1e-6 if key == "std" else None)
    if d.get("interpolation", "bilinear") not in INTERPOLATIONS:
        raise ModelFileError(f"{where}.interpolation: {d.get('interpolation')!r}; expected one of "
                             f"{', '.join(INTERPOLATIONS)}")
    return PreprocessSpec.from_dict(d)


def _files(d, where: str) -> dict[str, FileEntry]:
    d = _mapping(d, where)
    out = {}
    for name, entry in d.items():
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise ModelFileError(f"{where}: {name!r} is not a plain file name in the model folder")
        entry = _mapping(entry, f"{where}.{name}")
        digest = entry.get("sha256")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ModelFileError(f"{where}.{name}: lacks a sha256 (64 hex digits), got {digest!r}; every listed "
                                 "file is verified before it is loaded: re-export the model")
        size = entry.get("bytes")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ModelFileError(f"{where}.{name}.bytes: expected a whole number, got {size!r}")
        out[name] = FileEntry(digest, size)
    return out
