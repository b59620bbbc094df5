"""The PyTorch backend of :class:`seedlings.inference.Model`: a training run folder's weights.safetensors.

It lives with the models (it needs ``create_model`` and the novelty head), so the torch-free model
API in seedlings/inference.py never imports torch; ``seedlings.load_model`` chooses it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seedlings.artifact import ModelFile
from seedlings.models import novelty
from seedlings.models.checkpoint import load_weights
from seedlings.models.registry import create_model

WEIGHTS_FILE = "weights.safetensors"


class TorchBackend:
    name = "torch"

    def __init__(self, model_dir: Path, model_file: ModelFile, threads: int | None = None):
        weights = model_file.verify_file(model_dir, WEIGHTS_FILE)
        if threads:
            torch.set_num_threads(threads)
        self.model = create_model(model_file.backbone, len(model_file.classes))
        self.model.load_state_dict(load_weights(weights))
        self.model.eval()
        if (Path(model_dir) / novelty.NOVELTY_FILE).is_file():
            model_file.verify_file(model_dir, novelty.NOVELTY_FILE)
        self.with_distance = novelty.wrap(self.model, Path(model_dir))
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
