"""The PyTorch backend of :class:`seedlings.inference.Model`: a training run folder's weights.safetensors.

It lives with the models (it needs ``create_model`` and the novelty head), so the torch-free model
API in seedlings/inference.py never imports torch; ``seedlings.load_model`` chooses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seedlings.artifact import NOVELTY, WEIGHTS, ModelFile
from seedlings.models import novelty
from seedlings.models.checkpoint import load_weights
from seedlings.models.registry import create_model


def load_network(run: Path, model_file: ModelFile):
    """A run folder's network, in eval mode, and the same network with its "not a seedling" distance output
    (None when the run has no detector). The one loader of a run's files: each is read only when model.json
    lists it and its sha256 matches (``verify_file``), so a tampered or swapped file is refused, whoever loads
    it (evaluate, predict, export, --init)."""
    model = create_model(model_file.backbone, len(model_file.classes))
    model.load_state_dict(load_weights(model_file.verify_file(run, WEIGHTS)))
    model.eval()
    with_distance = None
    if NOVELTY in model_file.files or (run / NOVELTY).is_file():
        with_distance = novelty.wrap(model, model_file.verify_file(run, NOVELTY))
    return model, with_distance


class TorchBackend:
    name = "torch"

    def __init__(self, model_dir: Path, model_file: ModelFile, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.model, self.with_distance = load_network(Path(model_dir), model_file)
        self.has_distance = self.with_distance is not None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).float().numpy()

    def scores(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.has_distance:
            return self(x), None
        with torch.no_grad():
            logits, distance = self.with_distance(torch.from_numpy(x))
        return logits.float().numpy(), distance.float().numpy()
