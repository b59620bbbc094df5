"""Several trained classifiers of the same species and input size, used as one model.

The ensemble's prediction is the mean of its members' probabilities. Its "logits" are the log of
that mean, so that softmax gives the mean back and temperature scaling, the unknown threshold,
evaluation and export treat an ensemble exactly like a single network. Its features (for the
"not a seedling" distance) are the members' pooled features side by side.
"""

from __future__ import annotations

import torch


def features_and_logits(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled pre-classifier features and logits of a timm classifier or an Ensemble."""
    if isinstance(model, Ensemble):
        return model.features_and_logits(x)
    feats = model.forward_head(model.forward_features(x), pre_logits=True)
    return feats, model.get_classifier()(feats)


class Ensemble(torch.nn.Module):
    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats, probs = [], []
        for member in self.members:
            f, logits = features_and_logits(member, x)
            feats.append(f)
            probs.append(logits.float().softmax(1))
        mean = torch.stack(probs).mean(0)
        return torch.cat(feats, 1), mean.clamp_min(1e-12).log()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]
