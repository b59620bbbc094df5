"""Wire a training run: data → split → model → epochs → best weights, model.json, plots.

Only rank 0 writes files. The run folder alone reproduces the run (config.yaml, split.json).
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from seedlings import __version__
from seedlings.artifact import UNKNOWN_METHOD, Calibration, ModelFile, UnknownRule
from seedlings.config import TrainConfig, resolve
from seedlings.data import Split, prepare, stratified_split
from seedlings.data.torchdata import CachedImages
from seedlings.errors import SeedlingsError
from seedlings.fileio import atomic_write_json, atomic_write_text
from seedlings.models import create_model, resolve_name
from seedlings.models.checkpoint import load_checkpoint, save_checkpoint, save_weights
from seedlings.preprocess import PreprocessSpec
from seedlings.progress import bar
from seedlings.training import distributed as D
from seedlings.training.loop import EMA, evaluate_sharded, train_one_epoch

CHECKPOINT = "checkpoint.safetensors"
WEIGHTS = "weights.safetensors"


@dataclass
class Subset:
    images: np.ndarray
    labels: np.ndarray
    rows: np.ndarray


def log(env: D.DistEnv, msg: str) -> None:
    if env.is_main:
        print(msg, file=sys.stderr, flush=True)


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


def train(config: TrainConfig | dict | None = None, resume: bool = False, progress: bool = True,
          **overrides) -> Path:
    """Train a model; returns the run folder. Works alone or under torchrun."""
    if isinstance(config, dict) or config is None:
        config = TrainConfig.from_dict({**TrainConfig().to_dict(), **(config or {}), **overrides})
    cfg = config.validate()
    env = D.setup()
    try:
        # torchrun restarted the workers after a failure: continue, never start over. The count is
        # per node and a replacement node starts at 0, so any restarted process makes every one resume.
        restarted = float(int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0)
        resume = resume or D.all_reduce_sum(torch.tensor([restarted], device=env.device), env).item() > 0
        return _train(cfg, env, resume, progress and env.is_main)
    finally:
        D.cleanup()


def train_from_cli(config_file: str | None, overrides: dict, resume: bool) -> Path:
    out = Path(overrides.get("out") or "")
    saved = out / "config.yaml"
    if resume and saved.is_file() and not config_file:
        config_file = str(saved)  # a resumed run keeps its settings; flags given now still apply
    return train(resolve(config_file, overrides), resume=resume)


def _prepare_data(cfg: TrainConfig, env: D.DistEnv, root: str, progress: bool):
    if env.is_local_main:
        data = prepare(root, cfg.image_size, cache_root=cfg.cache_dir, bad_images=cfg.bad_images,
                       progress=progress and env.is_main)
    D.barrier(env)
    if not env.is_local_main:
        data = prepare(root, cfg.image_size, cache_root=cfg.cache_dir, bad_images=cfg.bad_images,
                       progress=False)
    if data.bad:
        log(env, f"{root}: skipped {len(data.bad)} unusable image(s) (first: {data.bad[0]['path']}: "
                 f"{data.bad[0]['reason']}); --bad-images fail stops instead")
    return data


def _make_split(cfg: TrainConfig, env, data, run: Path, resuming: bool):
    if cfg.val_data:
        val = _prepare_data(cfg, env, cfg.val_data, False)
        _check_val_classes(data.classes, val.classes, cfg)
        remap = np.asarray([data.classes.index(c) for c in val.classes])
        train = Subset(data.images, data.labels, np.arange(len(data.files)))
        return train, Subset(val.images, remap[val.labels], np.arange(len(val.files))), None
    split_path = run / "split.json"
    if resuming and split_path.is_file():
        split = Split.load(split_path)
    else:
        split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
        split = stratified_split(data.files, data.labels.tolist(), cfg.val_fraction, split_seed)
    train_rows, val_rows = data.subset(split.train), data.subset(split.val)
    missing = set(range(len(data.classes))) - set(data.labels[train_rows].tolist())
    if missing:
        names = ", ".join(data.classes[i] for i in sorted(missing))
        raise SeedlingsError(f"{cfg.data}: class(es) {names} have no training images after the split; "
                             "add images (at least 2 per class) or lower --val-fraction")
    return Subset(data.images, data.labels, train_rows), Subset(data.images, data.labels, val_rows), split


def _check_val_classes(train_classes, val_classes, cfg) -> None:
    extra = [c for c in val_classes if c not in train_classes]
    if extra:
        raise SeedlingsError(f"--val-data {cfg.val_data}: class(es) {', '.join(extra)} are in validation but "
                             f"not in training ({cfg.data}); the model cannot learn them. Add them to the "
                             "training folder or remove them from validation")


def _check_run_folder(run: Path, resume: bool) -> dict | None:
    ckpt = run / CHECKPOINT
    if ckpt.exists() and not resume:
        raise SeedlingsError(f"--out {run}: already holds a run; pass --resume to continue it, "
                             "or choose another --out")
    if resume and ckpt.exists():
        return dict(zip(("model", "ema", "optim", "info"), load_checkpoint(ckpt)))
    return None


def _loader(cfg: TrainConfig, env, train: Subset, num_classes: int):
    per_rank = max(1, cfg.batch_size // env.world_size)
    dataset = CachedImages(train.images, train.labels, train.rows)
    if cfg.balance == "sampler":
        from seedlings.training.sampling import WeightedDistributedSampler

        sampler = WeightedDistributedSampler(train.labels[train.rows], num_classes, env.world_size,
                                             env.rank, cfg.seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    drop_last = len(sampler) > per_rank
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=0, drop_last=drop_last)


def _class_weights(cfg: TrainConfig, train: Subset, num_classes: int, device: str):
    if cfg.balance != "loss":
        return None
    counts = np.bincount(train.labels[train.rows], minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _train(cfg: TrainConfig, env: D.DistEnv, resume: bool, progress: bool) -> Path:
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(D.local_threads(env, cfg.threads))
    run = Path(cfg.out)
    # Rank 0 reads the checkpoint and hands it to every process, so pods whose nodes do not
    # share the runs volume still resume with the same weights and optimizer state.
    state = D.broadcast_object(_check_run_folder(run, resume) if env.is_main else None, env)
    if resume and state is None:
        log(env, f"--resume: {run} has no checkpoint yet; starting from the beginning")
    data = _prepare_data(cfg, env, cfg.data, progress)
    train_set, val_set, split = _make_split(cfg, env, data, run, state is not None)
    classes = data.classes
    backbone = resolve_name(cfg.model)
    spec = PreprocessSpec(image_size=cfg.image_size, mean=backbone.mean, std=backbone.std)
    precision = choose_precision(cfg.precision, env.device)
    model, init = build_model(cfg, classes, train_set, spec)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(env.device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema else None
    optimizer = torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    loader = _loader(cfg, env, train_set, len(classes))
    ctx = {"cfg": cfg, "spec": spec, "ema": ema, "precision": precision, "step": 0,
           "class_weights": _class_weights(cfg, train_set, len(classes), env.device),
           "total_steps": cfg.epochs * len(loader), "warmup_steps": int(cfg.warmup_epochs * len(loader)),
           "scaler": torch.amp.GradScaler(env.device.split(":")[0], enabled=precision == "fp16")}
    start_epoch, best = 0, {"f1_micro": -1.0, "epoch": -1}
    if state is not None:
        start_epoch, best = _restore(state, model, ema, optimizer, ctx, env, run)
    if env.is_main:
        _write_run_header(run, cfg, classes, split, state is not None)
    if env.distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    log(env, f"training {cfg.model} on {len(train_set.rows)} images ({len(val_set.rows)} validation), "
             f"{len(classes)} classes, {cfg.image_size}px, {precision}, {env.world_size} process(es), "
             f"epochs {start_epoch + 1}–{cfg.epochs}")
    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        best = _run_epoch(epoch, model, ema, optimizer, loader, ctx, env, train_set, val_set, classes, best,
                          run, progress)
    wall = time.perf_counter() - t0
    if env.is_main:
        _finish(run, cfg, classes, (train_set, val_set), spec, best, wall, env, precision, init)
    D.barrier(env)
    return run


def build_model(cfg: TrainConfig, classes: list[str], train_set: Subset, spec: PreprocessSpec):
    """The network to train and where its weights came from (ImageNet, a seedlings model, a file, scratch)."""
    if not cfg.init:
        model = create_model(cfg.model, len(classes), pretrained=cfg.pretrained, weights=cfg.weights,
                             drop_path=cfg.drop_path)
        return model, init_record(cfg)
    from seedlings.data.torchdata import to_model_input
    from seedlings.models.init_from import load_init

    rows = train_set.rows[:256]  # the same images in every process: identical models under torchrun
    batches = [to_model_input(torch.from_numpy(np.asarray(train_set.images[rows[i:i + 64]])), spec)
               for i in range(0, len(rows), 64)]
    return load_init(cfg.init, lambda n: create_model(cfg.model, n, drop_path=cfg.drop_path), classes, batches)


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """The new classifier at ``lr``; the rest at ``lr × backbone_lr`` when it starts from learned weights
    (ImageNet or --weights), so fine-tuning adapts the features instead of overwriting them."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, torch.nn.Module) else set()
    scale = cfg.backbone_lr if (cfg.pretrained or cfg.weights or cfg.init) else 1.0
    body = [p for p in model.parameters() if id(p) not in head_ids]
    heads = [p for p in model.parameters() if id(p) in head_ids]
    return [g for g in ({"params": body, "lr_scale": scale}, {"params": heads, "lr_scale": 1.0}) if g["params"]]


def _restore(state, model, ema, optimizer, ctx, env, run):
    info = state["info"]
    model.load_state_dict(state["model"])
    if ema is not None and state["ema"] is not None:
        ema.module.load_state_dict(state["ema"])
        ema.steps = int(info.get("ema_steps", 0))
    optimizer.load_state_dict(state["optim"])
    ctx["step"] = int(info["step"])
    log(env, f"resumed {run} from its checkpoint after epoch {info['epoch'] + 1} "
             f"(best validation micro-F1 so far {info['best']['f1_micro']:.4f})")
    return int(info["epoch"]) + 1, info["best"]


def _write_run_header(run: Path, cfg, classes, split, resumed: bool) -> None:
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.yaml")
    atomic_write_json(run / "classes.json", classes)
    if split is not None and not (resumed and (run / "split.json").exists()):
        split.save(run / "split.json")


def _run_epoch(epoch, model, ema, optimizer, loader, ctx, env, train_set, val_set, classes, best, run,
               progress):
    cfg = ctx["cfg"]
    loader.sampler.set_epoch(epoch)
    t0 = time.perf_counter()
    total = len(loader) * loader.batch_size * env.world_size
    with bar(total, f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress) as advance:
        stats = train_one_epoch(model, loader, optimizer, ctx, env, epoch, advance)
    scored = ema.module if ema is not None else (model.module if hasattr(model, "module") else model)
    from seedlings.evaluation.metrics import report_from_confusion

    cm, val_loss = evaluate_sharded(scored, val_set.images, val_set.labels, val_set.rows, ctx["spec"], env,
                                    len(classes), cfg.channels_last)
    rep = report_from_confusion(cm, classes)
    row = {"epoch": epoch + 1, **stats, "val_loss": val_loss, "val_acc": rep["accuracy"],
           "val_f1_micro": rep["f1_micro"], "val_f1_macro": rep["f1_macro"],
           "epoch_s": time.perf_counter() - t0, "world_size": env.world_size, "precision": ctx["precision"]}
    improved = rep["f1_micro"] > best["f1_micro"]
    if improved:
        best = {"f1_micro": rep["f1_micro"], "f1_macro": rep["f1_macro"], "accuracy": rep["accuracy"],
                "epoch": epoch + 1}
    if env.is_main:
        _save_epoch(run, epoch, row, scored, model, ema, optimizer, ctx, best, improved)
        log(env, f"epoch {epoch + 1}/{cfg.epochs}  loss {stats['train_loss']:.4f}  acc {stats['train_acc']:.4f}"
                 f"  val_loss {val_loss:.4f}  val_f1 {rep['f1_micro']:.4f}  {row['epoch_s']:.0f}s"
                 f"{'  *best*' if improved else ''}")
    D.barrier(env)
    return best


def _save_epoch(run, epoch, row, scored, model, ema, optimizer, ctx, best, improved) -> None:
    if improved:
        save_weights(run / WEIGHTS, scored.state_dict(), {"epoch": epoch + 1})
    _append_metrics(run / "metrics.jsonl", row)
    raw = model.module if hasattr(model, "module") else model
    save_checkpoint(run / CHECKPOINT, raw, ema, optimizer,
                    {"epoch": epoch, "step": ctx["step"], "best": best,
                     "ema_steps": ema.steps if ema is not None else 0})


def _append_metrics(path: Path, row: dict) -> None:
    """Rewrite metrics.jsonl atomically, dropping rows of epochs being redone after a resume."""
    rows = []
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["epoch"] < row["epoch"]] + [row]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def _finish(run, cfg, classes, subsets, spec, best, wall, env, precision, init: dict) -> None:
    from seedlings.evaluation.calibrate import calibrate_run
    from seedlings.evaluation.plots import plot_run
    from seedlings.training import novelty

    train_set, val_set = subsets
    model = create_model(cfg.model, len(classes))
    from seedlings.models.checkpoint import load_weights

    model.load_state_dict(load_weights(run / WEIGHTS))
    calib, report = calibrate_run(model, val_set, spec, classes)
    if len(val_set.rows):
        calib["unknown"].update(novelty.fit_run(model, train_set, val_set, spec, len(classes), run),
                                method=UNKNOWN_METHOD)
    atomic_write_json(run / "report.json", report)
    meta = build_model_file(cfg, classes, spec, best, calib, report, init)
    meta.extra["training"] = training_record(cfg, wall, env, precision, len(train_set.rows), len(val_set.rows))
    meta.extra["params"] = sum(p.numel() for p in model.parameters())
    for f in (WEIGHTS, novelty.NOVELTY_FILE):
        if (run / f).is_file():
            meta.record_file(run, f)
    meta.save(run)
    plot_run(run, classes, report)
    log(env, f"done in {wall / 60:.1f} min: best validation micro-F1 {best['f1_micro']:.4f} "
             f"(epoch {best['epoch']}); run folder {run}")


def init_record(cfg: TrainConfig) -> dict:
    """Where the initial weights came from (the model card and model.json say it)."""
    if cfg.pretrained:
        from seedlings.models.pretrained import WEIGHTS

        return WEIGHTS[cfg.model].to_dict()
    if cfg.weights:
        return {"kind": "file", "file": Path(cfg.weights).name}
    return {"kind": "scratch"}


def build_model_file(cfg, classes, spec, best, calib, report, init: dict) -> ModelFile:
    backbone = resolve_name(cfg.model)
    now = datetime.datetime.now(datetime.timezone.utc)
    return ModelFile(
        name=f"seedlings-{backbone.name}", version=now.strftime("%Y.%m.%d.%H%M"), backbone=backbone.name,
        timm_name=backbone.timm_name, classes=list(classes), preprocess=spec, init=init,
        calibration=Calibration.from_dict(calib["calibration"], "calibration"),
        unknown=UnknownRule.from_dict(calib["unknown"], "unknown"),
        extra={"seedlings_version": __version__, "created": now.isoformat(timespec="seconds"),
               "metrics": {"split": "validation", "n": report["n"], "accuracy": report["accuracy"],
                           "f1_micro": report["f1_micro"], "f1_macro": report["f1_macro"],
                           "best_epoch": best["epoch"], "tta": False}})


def training_record(cfg, wall: float, env, precision: str, n_train: int, n_val: int) -> dict:
    return {"epochs": cfg.epochs, "wall_s": round(wall, 1), "world_size": env.world_size, "precision": precision,
            "device": env.device, "n_train": n_train, "n_val": n_val, "data": str(cfg.data),
            **({"val_data": str(cfg.val_data)} if cfg.val_data else {}), "command": " ".join(sys.argv),
            "host_cpus": os.cpu_count()}
