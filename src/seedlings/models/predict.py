"""Logits of a torch model over rows of the prepared cache: shared by training, evaluation and export."""

from __future__ import annotations

import numpy as np
import torch

from seedlings.data.torchdata import to_model_input


@torch.no_grad()
def predict_logits(model, images: np.ndarray, rows: np.ndarray, spec, device: str = "cpu",
                   batch_size: int = 128, tta: bool = False, channels_last: bool = False) -> np.ndarray:
    """Logits for the given cache rows (eval transform; mean of the 8 dihedral views with ``tta``)."""
    model.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        batch = torch.from_numpy(np.stack([images[r] for r in rows[i:i + batch_size]]))
        x = to_model_input(batch, spec, channels_last).to(device)
        if not tta:
            out.append(model(x).float().cpu())
            continue
        views = [torch.rot90(xf, k, dims=(2, 3)) for xf in (x, x.flip(3)) for k in range(4)]
        probs = torch.stack([model(v).float().softmax(1) for v in views]).mean(0)
        out.append(probs.clamp_min(1e-12).log().cpu())  # log of mean probability, used as logits
    if not out:
        return np.zeros((0, 0), np.float32)
    return torch.cat(out).numpy()
