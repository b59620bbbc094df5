"""The public Python API's loader: ``seedlings.load_model`` opens any model folder or finished run folder.

It sits above the models (it may hand :class:`~seedlings.inference.Model` the PyTorch backend),
beside the CLI; the service uses the torch-free ``seedlings.inference`` directly.
"""

from __future__ import annotations

from pathlib import Path

from seedlings.artifact import ModelFile
from seedlings.errors import missing_extra
from seedlings.inference import Model, needs_torch, resolve_model_dir


def load_model(path: str | Path | None = None, backend: str = "auto", precision: str = "fp32",
               threads: int | None = None) -> Model:
    """Load a model folder (``None``: the default model shipped in the package) or a finished run
    folder; ONNX Runtime when the folder has model.onnx, else PyTorch (the train extra)."""
    model_dir = resolve_model_dir(path)
    if needs_torch(model_dir, backend, precision):
        return Model(model_dir, backend=torch_backend(model_dir, threads), precision=precision, threads=threads)
    return Model(model_dir, backend=backend, precision=precision, threads=threads)


def torch_backend(model_dir: Path, threads: int | None = None):
    try:
        # lazy: loading an ONNX folder (the default model, a serve-only install) must not need torch
        from seedlings.models.backend import TorchBackend
    except ModuleNotFoundError as exc:
        raise missing_extra("train", exc.name or "torch") from exc
    return TorchBackend(model_dir, ModelFile.load(model_dir), threads)
