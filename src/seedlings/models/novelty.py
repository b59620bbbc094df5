""""Not a seedling": how far an image's features are from the nearest species, by two distances.

The classifier's confidence alone cannot tell a seedling from a photo of something else: on
generated noise, flat colours or text the max probability is often high (measured: 93 % of such
images passed the max-probability threshold). The pooled features before the classifier head
say more: real seedlings sit near one of the 12 class means, other images far from all of them.

Two distances, because neither works for every backbone (docs/MODEL_CARD.md, "unknown" table):

- **Mahalanobis**: class means and one shared, shrunk covariance. It flags every generated probe on
  the from-scratch ResNet, but on the 160 px EfficientNet-Lite0 fine-tune it let through all the
  noise images and 40 % of the text.
- **Cosine** of the signed square root of the features (the Hellinger trick: it damps the few
  large activations) to each class's mean direction. It catches those on the Lite0, but lets most
  of the ResNet's text images through.

Each is divided by its own 99th percentile on the validation images, so both are in the same units
(1 = as far as the farthest 1 % of real seedlings); the image's distance is the larger of the two.
Fitted on the training images of the run; the threshold is set on the validation images so that a
known share of real seedlings is flagged. The distance is computed inside the exported ONNX graph,
as its second output, so serving needs no torch. Files fitted before the cosine distance existed
(no ``directions`` tensor) give the Mahalanobis distance alone, as they always did.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from seedlings.artifact import NOVELTY, UNKNOWN_METHOD, Calibration, UnknownRule
from seedlings.fileio import atomic_write
from seedlings.models.ensemble import features_and_logits
from seedlings.models.predict import predict_logits

# The "not a seedling" rule's budget of real photos it may flag, owned here: the max-probability threshold
# (evaluation/calibrate.py) takes PROBABILITY_FALSE_REJECT of it, the feature distance the rest.
PROBABILITY_FALSE_REJECT = 0.01
TOTAL_FALSE_REJECT = 0.03  # share of real validation images the whole unknown rule may flag: the distance
# gets what the max-probability rule (evaluation/calibrate.py, 1 %) leaves of it
SCALE_QUANTILE = 0.99  # each distance is divided by this quantile of its validation values
SHRINK = 0.05  # covariance shrinkage towards its mean variance: 3,400 images for 512 dimensions


class WithDistance(torch.nn.Module):
    """A timm classifier (or an Ensemble) that also returns each image's distance to the nearest class:
    the larger of the scaled Mahalanobis and cosine distances, or (without ``directions``) the squared
    Mahalanobis distance alone, as files fitted before the cosine distance define it."""

    def __init__(self, model: torch.nn.Module, centres: torch.Tensor, whiten: torch.Tensor,
                 directions: torch.Tensor | None = None, scales: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.register_buffer("centres", centres.float())  # class means, whitened: C × D
        self.register_buffer("whiten", whiten.float())  # D × D, with whiten @ whiten.T = Σ⁻¹
        self.cosine = directions is not None
        if self.cosine:
            self.register_buffer("directions", directions.float())  # unit class directions of signed-√ features
            self.register_buffer("scales", scales.float())  # (Mahalanobis, cosine) validation quantiles

    def forward(self, x):
        feats, logits = features_and_logits(self.model, x)
        feats = feats.float()
        z = feats @ self.whiten
        d = (z * z).sum(1, keepdim=True) - 2 * z @ self.centres.T + (self.centres * self.centres).sum(1)
        maha = d.min(1).values.clamp_min(0)
        if not self.cosine:
            return logits, maha
        root = feats.sign() * feats.abs().sqrt()
        root = root / root.norm(dim=1, keepdim=True).clamp_min(1e-12)
        cos = (1 - (root @ self.directions.T).max(1).values).clamp_min(0)
        return logits, torch.maximum(maha / self.scales[0], cos / self.scales[1])


def pooled_features(model, x):
    """A timm model's pooled features, the input of its classifier (an ensemble's: all members')."""
    return features_and_logits(model, x)[0]


class _Outputs(torch.nn.Module):
    """``model`` with ``outputs(model, x)`` as its forward, for predict_logits' batching."""

    def __init__(self, model: torch.nn.Module, outputs):
        super().__init__()
        self.model, self.outputs = model, outputs

    def forward(self, x):
        return self.outputs(self.model, x)


def features(model, images: np.ndarray, rows: np.ndarray, spec) -> np.ndarray:
    """Pooled pre-classifier features (eval transform) of the given cache rows."""
    return predict_logits(_Outputs(model, pooled_features), images, rows, spec).astype(np.float64)


def features_logits(model, images: np.ndarray, rows: np.ndarray, spec, num_classes: int):
    """Features and logits of the given cache rows in one pass."""
    both = predict_logits(_Outputs(model, lambda m, x: torch.cat(features_and_logits(m, x), dim=1)),
                          images, rows, spec).astype(np.float64)
    return both[:, :-num_classes], both[:, -num_classes:]


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
    """Squared Mahalanobis distance to the nearest class (‖z‖² − 2 z·c + ‖c‖², as the graph computes it: an
    images × classes matrix, never images × classes × features)."""
    z = feats @ whiten
    d = (z * z).sum(1, keepdims=True) - 2 * z @ centres.T + (centres * centres).sum(1)
    return np.maximum(d.min(1), 0.0)


def signed_root(feats: np.ndarray) -> np.ndarray:
    """Signed square root of each feature, each row scaled to unit length (what the cosine distance compares)."""
    root = np.sign(feats) * np.sqrt(np.abs(feats))
    return root / np.maximum(np.linalg.norm(root, axis=1, keepdims=True), 1e-12)


def fit_directions(train_feats: np.ndarray, train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Unit mean direction of each class's signed-√ features (C × D); a class without images points nowhere
    (a zero row: cosine 0, distance 1, so it is never nearer than a real class)."""
    root = signed_root(train_feats)
    means = np.stack([root[train_labels == c].mean(0) if (train_labels == c).any() else np.zeros(root.shape[1])
                      for c in range(num_classes)])
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return np.where(norms > 0, means / np.maximum(norms, 1e-12), 0.0)


def cosine_distances(directions: np.ndarray, feats: np.ndarray) -> np.ndarray:
    """1 − the largest cosine between an image's signed-√ features and a class direction."""
    return np.maximum(1 - (signed_root(feats) @ directions.T).max(1), 0.0)


def combined(centres, whiten, directions, scales, feats: np.ndarray) -> np.ndarray:
    """What the exported graph's ``distance`` output computes (see :class:`WithDistance`)."""
    return np.maximum(distances(centres, whiten, feats) / scales[0], cosine_distances(directions, feats) / scales[1])


def budget_threshold(val: np.ndarray, unsure: np.ndarray, total: float = TOTAL_FALSE_REJECT) -> float:
    """The distance threshold that, with the images the max-probability rule already flags (``unsure``),
    flags at most ``total`` of the validation images: the distance takes what is left of the budget."""
    if not len(val):
        return float("inf")
    left = max(0, int(np.floor(total * len(val) + 1e-9)) - int(unsure.sum()))
    others = np.sort(val[~unsure])[::-1]
    if not len(others):
        return float("inf")
    return float(others[min(left, len(others) - 1)])  # `left` of the others lie above it (ties: fewer)


def fit_run(model, train_set, val_set, spec, num_classes: int, run: Path, *, calibration: Calibration,
            rule: UnknownRule) -> UnknownRule:
    """Fit on the run's training images; scale both distances and set the threshold on its validation
    images, given the max-probability ``rule`` (under ``calibration``) already in force; save the file.
    Returns ``rule`` with the distance threshold added. The distances' quantiles on the training images are
    recorded too: beside the validation ones they say how much farther new photos lie (training/final.py)."""
    val_feats, val_logits = features_logits(model, val_set.images, val_set.rows, spec, num_classes)
    detector = Detector.fit(model, train_set, spec, num_classes)
    scales = np.ones(2)
    if len(val_feats):
        scales = np.maximum(detector.quantiles(val_feats), 1e-9)
    val = combined(*detector.stats, scales, val_feats) if len(val_feats) else np.zeros(0)
    unsure = rule.signals(calibration.probabilities(val_logits))[0] if len(val) else np.zeros(0, bool)
    threshold = budget_threshold(val, unsure)
    detector.save(run, scales)
    how = {"target_false_reject_validation_total": TOTAL_FALSE_REJECT,
           "false_reject_validation_total": float((unsure | (val > threshold)).mean()) if len(val) else 0.0,
           "distance_false_reject_validation": float((val > threshold).mean()) if len(val) else 0.0,
           "distance_scales": {"mahalanobis": float(scales[0]), "cosine": float(scales[1]),
                               "quantile": SCALE_QUANTILE},
           **detector.record()}
    return dataclasses.replace(rule, method=UNKNOWN_METHOD, distance_threshold=threshold,
                               extra={**rule.extra, **how})


def fit_final(model, train_set, spec, num_classes: int, run: Path, *, rule: UnknownRule, ratio: np.ndarray,
              threshold: float, source: dict) -> UnknownRule:
    """A run without validation images (training/final.py): fit on all its images, scale each distance by their
    own quantile times ``ratio`` (how much farther its recipe's folds found new photos), and take the folds'
    ``threshold``; save the file. Returns ``rule`` with the distance threshold added."""
    detector = Detector.fit(model, train_set, spec, num_classes)
    scales = np.maximum(detector.train_quantiles * np.asarray(ratio, dtype=np.float64), 1e-9)
    detector.save(run, scales)
    how = {"target_false_reject_validation_total": TOTAL_FALSE_REJECT,
           "distance_scales": {"mahalanobis": float(scales[0]), "cosine": float(scales[1]),
                               "quantile": SCALE_QUANTILE, "from": "training quantiles × the folds' median "
                                                                    "held-out/training ratio",
                               "ratio": {"mahalanobis": float(ratio[0]), "cosine": float(ratio[1])}},
           "distance_threshold_from": source, **detector.record()}
    return dataclasses.replace(rule, method=UNKNOWN_METHOD, distance_threshold=float(threshold),
                               extra={**rule.extra, **how})


@dataclasses.dataclass
class Detector:
    """Class centres, whitening and directions fitted on a run's training images, with the distances'
    ``SCALE_QUANTILE`` on those same images."""

    centres: np.ndarray
    whiten: np.ndarray
    directions: np.ndarray
    train_quantiles: np.ndarray  # (Mahalanobis, cosine)
    n: int

    @classmethod
    def fit(cls, model, train_set, spec, num_classes: int) -> Detector:
        feats = features(model, train_set.images, train_set.rows, spec)
        labels = train_set.labels[train_set.rows]
        centres, whiten = fit(feats, labels, num_classes)
        directions = fit_directions(feats, labels, num_classes)
        detector = cls(centres, whiten, directions, np.ones(2), len(feats))
        if len(feats):
            detector.train_quantiles = np.maximum(detector.quantiles(feats), 1e-9)
        return detector

    @property
    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self.centres, self.whiten, self.directions

    def quantiles(self, feats: np.ndarray) -> np.ndarray:
        return np.array([np.quantile(distances(self.centres, self.whiten, feats), SCALE_QUANTILE),
                         np.quantile(cosine_distances(self.directions, feats), SCALE_QUANTILE)])

    def record(self) -> dict:
        return {"distance_train_quantiles": {"mahalanobis": float(self.train_quantiles[0]),
                                             "cosine": float(self.train_quantiles[1]), "quantile": SCALE_QUANTILE},
                "distance_fitted_on": f"{self.n} training images"}

    def save(self, run: Path, scales: np.ndarray) -> None:
        tensors = {name: torch.from_numpy(np.asarray(a)).float().contiguous()
                   for name, a in (("centres", self.centres), ("whiten", self.whiten),
                                   ("directions", self.directions), ("scales", scales))}
        atomic_write(run / NOVELTY, lambda tmp: save_file(tensors, tmp))


def wrap(model, path: Path):
    """The model with the distance output of the detector in ``path`` (a novelty file fit_run wrote; from a
    run folder, only as ``ModelFile.verify_file`` returns it)."""
    t = load_file(str(path))
    return WithDistance(model, t["centres"], t["whiten"], t.get("directions"), t.get("scales")).eval()
