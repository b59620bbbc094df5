"""The state of a training run, one epoch of training over it, and validation sharded across processes.

fit.py builds a :class:`TrainState` and calls :func:`train_one_epoch` and :func:`evaluate_sharded`
once per epoch; everything an epoch reads or changes is a field of the state, nothing else.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from seedlings.config import TrainConfig
from seedlings.data import Subset
from seedlings.data.torchdata import augment, normalise
from seedlings.models.predict import predict_logits
from seedlings.preprocess import PreprocessSpec
from seedlings.training.distributed import DistEnv, all_reduce_sum


def cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_precision(requested: str, device: str) -> str:
    """auto: bf16 on GPUs that have it and on CPUs with AMX/AVX512-BF16 (elsewhere bf16 is emulated, slow)."""
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_supports_bf16() else "fp32"


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
    clone = copy.deepcopy(model)
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone.eval()


def _best_so_far() -> dict:
    return {"f1_micro": -1.0, "epoch": -1}


@dataclass
class TrainState:
    """Everything the epochs of a run read and change.

    The first block is fixed once the run is set up; the last one moves with every step and goes into
    each checkpoint (with the model, EMA and optimizer tensors), so a resumed run continues exactly.
    """

    cfg: TrainConfig
    env: DistEnv
    spec: PreprocessSpec  # how an image becomes the model's input (model.json carries it)
    classes: list[str]
    train_set: Subset
    val_set: Subset
    init: dict  # where the initial weights came from (model.json's "init")

    model: torch.nn.Module  # wrapped in DistributedDataParallel under torchrun
    ema: EMA | None  # the weights that are evaluated and shipped, when on
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    precision: str  # fp32 | bf16 | fp16 (choose_precision's answer to cfg.precision)
    scaler: torch.amp.GradScaler  # loss scaling; only enabled for fp16
    class_weights: torch.Tensor | None  # --balance loss
    teacher: dict | None = None  # --teacher: file, sha256, α (model.json's training.teacher); rows ride the batches
    evidence: object | None = None  # --calibrate-from: training/final.FoldEvidence (no validation images)

    step: int = 0  # optimizer steps taken: the learning-rate schedule's position
    epoch: int = 0  # the epoch being trained, from 0
    best: dict = field(default_factory=_best_so_far)  # validation scores of the best epoch so far
    trained_s: float = 0.0  # seconds spent training so far, over every session of a resumed run

    @property
    def raw_model(self) -> torch.nn.Module:
        """The network itself, without its DistributedDataParallel wrapper."""
        return self.model.module if hasattr(self.model, "module") else self.model

    @property
    def scored_model(self) -> torch.nn.Module:
        """The weights that are validated, saved as the run's best and shipped: the EMA's when it is on."""
        return self.ema.module if self.ema is not None else self.raw_model

    @property
    def total_steps(self) -> int:
        return self.cfg.epochs * len(self.loader)

    @property
    def warmup_steps(self) -> int:
        return int(self.cfg.warmup_epochs * len(self.loader))

    @property
    def freeze_steps(self) -> int:
        """Steps during which only the classifier trains (--freeze-epochs)."""
        return self.cfg.freeze_epochs * len(self.loader)

    @property
    def frozen(self) -> bool:
        return self.epoch < self.cfg.freeze_epochs


def train_one_epoch(state: TrainState, advance=None) -> dict:
    """One pass over this epoch's batches; loss, accuracy and images/s summed over all processes.

    The augmentation generator is seeded from (seed, epoch, rank), so a resumed epoch draws exactly
    what the killed one drew."""
    cfg, env = state.cfg, state.env
    state.model.train()
    if state.frozen:
        freeze_batchnorm(state.raw_model)
    state.loader.sampler.set_epoch(state.epoch)  # a new shuffle per epoch, the same in every process
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + state.epoch * 1_009 + env.rank)
    totals = torch.zeros(3, dtype=torch.float64)  # loss sum, correct, count
    start = time.perf_counter()
    for batch, labels, *soft in state.loader:  # soft: the teacher's rows of the batch, with --teacher
        lr = _set_learning_rate(state)
        loss, logits, labels = _train_step(state, batch, labels, gen, soft[0] if soft else None)
        n = len(labels)
        totals += torch.tensor([loss.item() * n, (logits.argmax(1) == labels).sum().item(), n],
                               dtype=torch.float64)
        if advance:
            advance(n * env.world_size, f"loss {totals[0] / totals[2]:.3f} acc {totals[1] / totals[2]:.3f}")
    elapsed = time.perf_counter() - start
    all_reduce_sum(totals, env)
    return {"train_loss": float(totals[0] / totals[2]), "train_acc": float(totals[1] / totals[2]),
            "lr": lr, "train_images_per_s": float(totals[2] / elapsed)}


def _set_learning_rate(state: TrainState) -> float:
    """The schedule's rate for this step; each parameter group takes it times its ``lr_scale``.

    With --freeze-epochs the learned layers get 0 until then (AdamW moves no weight at rate 0, weight
    decay included), then warm up linearly again over ``warmup_epochs``, so the first full-network
    steps do not jolt the features the classifier has just been fitted to."""
    lr = lr_at(state.step, state.total_steps, state.warmup_steps, state.cfg.lr)
    since = state.step - state.freeze_steps  # steps since the learned layers were released
    if since < 0:
        rewarm = 0.0
    else:
        rewarm = min(1.0, (since + 1) / state.warmup_steps) if state.warmup_steps else 1.0
    for group in state.optimizer.param_groups:
        held = rewarm if state.freeze_steps and group.get("learned") else 1.0
        group["lr"] = lr * group.get("lr_scale", 1.0) * held
    return lr


def classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The network's classifier layer (timm's ``get_classifier``); an empty module when it has none."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    return head if isinstance(head, torch.nn.Module) else torch.nn.Module()


def freeze_batchnorm(model: torch.nn.Module) -> None:
    """Batch-norm layers outside the classifier normalise with their stored statistics and stop
    updating them (eval mode), so a frozen backbone computes exactly what it did before training."""
    head = {id(m) for m in classifier(model).modules()}
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and id(m) not in head:
            m.eval()


def _train_step(state: TrainState, batch: torch.Tensor, labels: torch.Tensor, gen: torch.Generator,
                soft: torch.Tensor | None = None):
    """Augment and mix on the device, forward under autocast, backward through the scaler, clip, step,
    update the EMA. Returns the loss, the logits and the labels on the device.

    ``soft``: the teacher's probability rows of the batch (--teacher); the target is then each image's row
    of :func:`soft_targets`, and mixup/CutMix mix those rows as they mix labels."""
    cfg, env = state.cfg, state.env
    x = normalise(augment(batch.to(env.device, non_blocking=True), cfg.augment, gen), state.spec,
                  cfg.channels_last)
    labels = labels.to(env.device)
    target = labels
    if soft is not None and cfg.teacher_weight > 0:  # α = 0: the plain labels, bit for bit the run without one
        target = soft_targets(labels, soft.to(env.device), cfg.teacher_weight)
    x, partner, lam = mix_batch(x, target, cfg, gen)
    with autocast_context(state.precision, env.device):
        logits = state.model(x)
        loss = _loss(logits, target, state)
        if lam < 1:
            loss = lam * loss + (1 - lam) * _loss(logits, partner, state)
    state.optimizer.zero_grad(set_to_none=True)
    state.scaler.scale(loss).backward()
    if cfg.grad_clip:  # over the weights that move: frozen layers' gradients would shrink the classifier's
        state.scaler.unscale_(state.optimizer)
        moving = [p for g in state.optimizer.param_groups if g["lr"] > 0 for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(moving, cfg.grad_clip)
    state.scaler.step(state.optimizer)
    state.scaler.update()
    if state.ema is not None:
        state.ema.update(state.raw_model)
    state.step += 1
    return loss, logits, labels


def _loss(logits, target, state: TrainState):
    """Cross-entropy against class indices (N) or, with --teacher, probability rows (N×C)."""
    if target.dim() == 2:
        return soft_cross_entropy(logits.float(), target, state.class_weights, state.cfg.label_smoothing)
    return F.cross_entropy(logits.float(), target, weight=state.class_weights,
                           label_smoothing=state.cfg.label_smoothing)


def soft_targets(labels: torch.Tensor, teacher: torch.Tensor, alpha: float) -> torch.Tensor:
    """q = (1 − α)·one-hot(label) + α·teacher's probabilities: the label keeps the lead, the teacher says
    which other species an image resembles."""
    onehot = F.one_hot(labels, teacher.shape[1]).to(teacher.dtype)
    return (1 - alpha) * onehot + alpha * teacher


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """−Σ_c q_c·log softmax(logits)_c averaged as F.cross_entropy averages class indices: label smoothing mixes
    q with the uniform distribution; with class weights w each term is weighted by w_c and the sum divided by
    Σ_i Σ_c w_c·q_ic (for a one-hot q: Σ_i w_label, PyTorch's weighted mean; its probability targets would
    divide by N instead, so --balance loss would weigh differently with a teacher than without)."""
    logp = F.log_softmax(logits, dim=1)
    smoothed = target * (1 - label_smoothing) + label_smoothing / target.shape[1] if label_smoothing else target
    if weight is None:
        return -(smoothed * logp).sum(1).mean()
    return -(smoothed * logp * weight).sum() / (target * weight).sum()


def mix_batch(x: torch.Tensor, labels: torch.Tensor, cfg, gen: torch.Generator):
    """Mixup or CutMix (one of them per batch when both are on): the mixed batch, the partner labels
    and the weight λ of the original labels. λ = 1 (nothing mixed) when both are off. ``labels`` may be
    class indices (N) or probability rows (N×C, --teacher): the partners are the same rows either way."""
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


def evaluate_sharded(state: TrainState) -> tuple[np.ndarray, float]:
    """Confusion matrix and mean loss of the scored model over the validation rows. Each process takes
    every world-size-th row and the sums are all-reduced, so every process gets the whole split's score."""
    env, val = state.env, state.val_set
    mine = val.rows[env.rank::env.world_size]
    logits = predict_logits(state.scored_model, val.images, mine, state.spec, env.device,
                            channels_last=state.cfg.channels_last)
    num_classes = len(state.classes)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.float64)
    loss_sum = torch.zeros(1, dtype=torch.float64)
    if len(mine):
        y = torch.from_numpy(val.labels[mine])
        lt = torch.from_numpy(logits)
        loss_sum += F.cross_entropy(lt, y, reduction="sum").item()
        cm.index_put_((y, lt.argmax(1)), torch.ones(len(y), dtype=torch.float64), accumulate=True)
    all_reduce_sum(cm, env)
    all_reduce_sum(loss_sum, env)
    return cm.numpy().astype(np.int64), float(loss_sum.item() / max(1, len(val.rows)))
