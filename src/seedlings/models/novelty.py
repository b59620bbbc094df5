""""Not a seedling": Mahalanobis distance of an image's features to the nearest species.

The classifier's confidence alone cannot tell a seedling from a photo of something else: on
generated noise, flat colours or text the max probability is often high (measured: 93 % of such
images passed the max-probability threshold). The pooled features before the classifier head
say more: real seedlings sit near one of the 12 class means, other images far from all of them.

Fitted on the training images of the run (class means and one shared covariance); the threshold
is set on the validation images so that a known share of real seedlings is flagged. The distance
is computed inside the exported ONNX graph, as its second output, so serving needs no torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from seedlings.artifact import UNKNOWN_METHOD
from seedlings.fileio import atomic_write
from seedlings.models.ensemble import features_and_logits
from seedlings.models.predict import predict_logits

NOVELTY_FILE = "novelty.safetensors"
FALSE_REJECT = 0.01  # share of real validation images the distance flag may flag
SHRINK = 0.05  # covariance shrinkage towards its mean variance: 3,400 images for 512 dimensions


class WithDistance(torch.nn.Module):
    """A timm classifier (or an Ensemble) that also returns each image's squared distance to the nearest class."""

    def __init__(self, model: torch.nn.Module, centres: torch.Tensor, whiten: torch.Tensor):
        super().__init__()
        self.model = model
        self.register_buffer("centres", centres.float())  # class means, whitened: C × D
        self.register_buffer("whiten", whiten.float())  # D × D, with whiten @ whiten.T = Σ⁻¹

    def forward(self, x):
        feats, logits = features_and_logits(self.model, x)
        z = feats.float() @ self.whiten
        d = (z * z).sum(1, keepdim=True) - 2 * z @ self.centres.T + (self.centres * self.centres).sum(1)
        return logits, d.min(1).values.clamp_min(0)


def pooled_features(model, x):
    """A timm model's pooled features, the input of its classifier (an ensemble's: all members')."""
    return features_and_logits(model, x)[0]


class _PooledFeatures(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return pooled_features(self.model, x)


def features(model, images: np.ndarray, rows: np.ndarray, spec) -> np.ndarray:
    """Pooled pre-classifier features (eval transform) of the given cache rows."""
    return predict_logits(_PooledFeatures(model), images, rows, spec).astype(np.float64)


def fit(train_feats: np.ndarray, train_labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Whitened class centres (C × D) and the whitening matrix (D × D) of a shared, shrunk covariance."""
    dim = train_feats.shape[1]
    means = np.stack([train_feats[train_labels == c].mean(0) if (train_labels == c).any() else
                      np.full(dim, np.inf) for c in range(num_classes)])
    present = np.isfinite(means[:, 0])
    resid = train_feats - means[train_labels]
    cov = resid.T @ resid / max(1, len(resid) - 1)
    cov = (1 - SHRINK) * cov + SHRINK * np.trace(cov) / dim * np.eye(dim)
    whiten = np.linalg.cholesky(np.linalg.inv(cov))  # L with L Lᵀ = Σ⁻¹, so ‖(f − μ) L‖² is Mahalanobis
    centres = np.where(present[:, None], np.nan_to_num(means, posinf=0.0) @ whiten, 1e6)  # absent: far away
    return centres, whiten


def distances(centres: np.ndarray, whiten: np.ndarray, feats: np.ndarray) -> np.ndarray:
    z = feats @ whiten
    return ((z[:, None, :] - centres[None]) ** 2).sum(-1).min(1)


def fit_run(model, train_set, val_set, spec, num_classes: int, run: Path) -> dict:
    """Fit on the run's training images, set the threshold on its validation images, save the file."""
    feats = features(model, train_set.images, train_set.rows, spec)
    centres, whiten = fit(feats, train_set.labels[train_set.rows], num_classes)
    val = distances(centres, whiten, features(model, val_set.images, val_set.rows, spec))
    threshold = float(np.quantile(val, 1 - FALSE_REJECT)) if len(val) else float("inf")
    tensors = {"centres": torch.from_numpy(centres).float().contiguous(),
               "whiten": torch.from_numpy(whiten).float().contiguous()}
    atomic_write(run / NOVELTY_FILE, lambda tmp: save_file(tensors, tmp))
    return {"method": UNKNOWN_METHOD, "distance_threshold": threshold,
            "distance_target_false_reject_validation": FALSE_REJECT,
            "distance_false_reject_validation": float((val > threshold).mean()) if len(val) else 0.0,
            "distance_fitted_on": f"{len(train_set.rows)} training images"}


def wrap(model, run_or_dir: Path):
    """The model with its distance output when the folder has a fitted detector, else None."""
    path = Path(run_or_dir) / NOVELTY_FILE
    if not path.is_file():
        return None
    t = load_file(str(path))
    return WithDistance(model, t["centres"], t["whiten"]).eval()
