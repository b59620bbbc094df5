"""One epoch of training, and evaluation sharded across processes with all-reduced results."""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from seedlings.data.torchdata import augment, normalise, to_model_input
from seedlings.training.distributed import DistEnv, all_reduce_sum


def autocast_context(precision: str, device: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def lr_at(step: int, total: int, warmup: int, base_lr: float, floor: float = 0.01) -> float:
    """Linear warm-up, then cosine decay to ``floor × base_lr``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base_lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class EMA:
    """Exponential moving average of the weights, with a warm-up so early epochs are usable."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.steps = 0
        self.module = _copy_model(model)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.steps += 1
        d = min(self.decay, (1 + self.steps) / (10 + self.steps))
        for e, p in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(p.detach(), alpha=1 - d)
            else:
                e.copy_(p)

    def state_dict(self) -> dict:
        return self.module.state_dict()


def _copy_model(model):
    import copy

    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.eval()


def train_one_epoch(model, loader, optimizer, ctx, env: DistEnv, epoch: int, advance=None) -> dict:
    """``ctx`` holds cfg, spec, class weights, ema, step counts, precision and the scaler."""
    cfg = ctx["cfg"]
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 1_009 + env.rank)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    start = time.perf_counter()
    for batch, labels in loader:
        step = ctx["step"]
        lr = lr_at(step, ctx["total_steps"], ctx["warmup_steps"], cfg.lr)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        x = normalise(augment(batch.to(env.device, non_blocking=True), cfg.augment, gen), ctx["spec"],
                      cfg.channels_last)
        labels = labels.to(env.device)
        x, partner, lam = mix_batch(x, labels, cfg, gen)
        with autocast_context(ctx["precision"], env.device):
            logits = model(x)
            loss = _loss(logits, labels, ctx)
            if lam < 1:
                loss = lam * loss + (1 - lam) * _loss(logits, partner, ctx)
        optimizer.zero_grad(set_to_none=True)
        ctx["scaler"].scale(loss).backward()
        if cfg.grad_clip:
            ctx["scaler"].unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        ctx["scaler"].step(optimizer)
        ctx["scaler"].update()
        if ctx["ema"] is not None:
            ctx["ema"].update(_unwrap(model))
        ctx["step"] = step + 1
        n = len(labels)
        totals += torch.tensor([loss.item() * n, (logits.argmax(1) == labels).sum().item(), n],
                               dtype=torch.float64)
        if advance:
            advance(n * env.world_size, f"loss {totals[0] / totals[2]:.3f} acc {totals[1] / totals[2]:.3f}")
    elapsed = time.perf_counter() - start
    all_reduce_sum(totals, env)
    return {"train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
            "lr": lr, "train_images_per_s": float(totals[2] / elapsed)}


def _loss(logits, labels, ctx):
    return F.cross_entropy(logits.float(), labels, weight=ctx["class_weights"],
                           label_smoothing=ctx["cfg"].label_smoothing)


def mix_batch(x: torch.Tensor, labels: torch.Tensor, cfg, gen: torch.Generator):
    """Mixup or CutMix (one of them per batch when both are on): the mixed batch, the partner labels
    and the weight λ of the original labels. λ = 1 (nothing mixed) when both are off."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return x, labels, 1.0
    use_cutmix = cfg.cutmix > 0 and (cfg.mixup == 0 or torch.rand(1, generator=gen).item() < 0.5)
    alpha = cfg.cutmix if use_cutmix else cfg.mixup
    rng = np.random.default_rng(int(torch.randint(0, 1 << 62, (1,), generator=gen)))  # resumable: from gen
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(len(x), generator=gen).to(x.device)
    if not use_cutmix:
        return x * lam + x[perm] * (1 - lam), labels[perm], lam
    h, w = x.shape[2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    x = x.clone()
    x[:, :, y0:y1, x0:x1] = x[perm][:, :, y0:y1, x0:x1]
    lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)  # the area actually pasted
    return x, labels[perm], lam


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


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


def evaluate_sharded(model, images, labels, rows, spec, env: DistEnv, num_classes: int,
                     channels_last: bool = False) -> tuple[np.ndarray, float]:
    """Confusion matrix and mean loss over ``rows``; each process takes every world-size-th row."""
    mine = rows[env.rank::env.world_size]
    logits = predict_logits(model, images, mine, spec, env.device, channels_last=channels_last)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    if len(mine):
        y = torch.from_numpy(labels[mine])
        lt = torch.from_numpy(logits)
        loss_sum += F.cross_entropy(lt, y, reduction="sum").item()
        cm.index_put_((y, lt.argmax(1)), torch.ones(len(y), dtype=torch.float64), accumulate=True)
    all_reduce_sum(cm, env)
    all_reduce_sum(loss_sum, env)
    return cm.numpy().astype(np.int64), float(loss_sum.item() / max(1, len(rows)))
