"""A training run, top to bottom: prepare → split → model → for each epoch train, evaluate, checkpoint → finish.

`_train` is the whole run; each step says why it is done that way. It runs alone or under torchrun
(every process runs all of it; only rank 0 writes files). The run folder alone reproduces the run
(config.yaml, split.json), and a killed run continues from its last checkpoint, exactly (`--resume`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from seedlings.artifact import NOVELTY, SPLIT, VAL_PREDICTIONS, WEIGHTS, Calibration, UnknownRule
from seedlings.config import TrainConfig, resolve
from seedlings.data import PreparedData, Split, Subset, fold_split, join, prepare, stratified_split
from seedlings.data.sources import duplicates_note
from seedlings.data.torchdata import CachedImages, to_model_input
from seedlings.errors import SeedlingsError
from seedlings.evaluation.calibrate import calibrate_run
from seedlings.evaluation.metrics import report_from_confusion
from seedlings.evaluation.plots import plot_run
from seedlings.fileio import atomic_write_json
from seedlings.models import create_model, novelty, pretrained
from seedlings.models.checkpoint import load_weights
from seedlings.models.init_from import load_init
from seedlings.preprocess import PreprocessSpec
from seedlings.progress import bar
from seedlings.training import distributed as D
from seedlings.training import final
from seedlings.training.folds import train_folds
from seedlings.training.loop import (
    EMA,
    TrainState,
    choose_precision,
    classifier,
    evaluate_sharded,
    train_one_epoch,
)
from seedlings.training.run_folder import (
    build_model_file,
    read_checkpoint,
    restore,
    save_epoch,
    training_record,
    write_predictions,
    write_run_header,
)
from seedlings.training.sampling import WeightedDistributedSampler
from seedlings.training.teacher import Teacher, check_readable, check_resumed, read_teacher


def train(config: TrainConfig | dict | None = None, resume: bool = False, progress: bool = True,
          **overrides) -> Path:
    """Train a model; returns the run folder. Works alone or under torchrun.

    Settings given as a dict or as keyword arguments resolve as on the command line (``config.resolve``):
    defaults, then the fine-tuning recipe when the run starts from learned weights, then the settings given.
    A TrainConfig is a complete, resolved set of settings (``config.resolve`` makes one): it is taken as it
    is, with ``overrides`` on top."""
    if isinstance(config, TrainConfig):
        merged = {**config.to_dict(), **overrides}
        merged["augment"] = {**config.to_dict()["augment"], **(overrides.get("augment") or {})}
        cfg = TrainConfig.from_dict(merged).validate()
    else:
        cfg = resolve(None, {**(config or {}), **overrides})
    if cfg.folds and cfg.fold is None:  # every fold in turn (each one a run of _train_one), then oof.csv
        return train_folds(cfg, _train_one, resume=resume, progress=progress)
    return _train_one(cfg, resume, progress)


def _train_one(cfg: TrainConfig, resume: bool, progress: bool) -> Path:
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


def _train(cfg: TrainConfig, env: D.DistEnv, resume: bool, progress: bool) -> Path:
    run = Path(cfg.out)
    # The same seed in every process, so every rank builds the same initial weights and DDP starts in step.
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(D.local_threads(env, cfg.threads))

    # Resume? Rank 0 reads the checkpoint and hands it to every process, so pods whose nodes do not
    # share the runs volume still resume with the same weights and optimizer state.
    saved = D.broadcast_object(read_checkpoint(run, resume) if env.is_main else None, env)
    if resume and saved is None:
        D.log(env, f"--resume: {run} has no checkpoint yet; starting from the beginning")

    # Prepare: decode and resize every image once into a memory-mapped cache, with the spec model.json
    # will carry (size, interpolation, the backbone's mean and std), so serving sees what training saw.
    # Several --data folders: a cache each, joined into one data set (data/sources.py).
    spec = cfg.preprocess_spec()
    data = prepare_data(cfg.data_folders(), spec, cfg, env, progress)

    # Split: stratified and seeded. A resumed run reads its own split.json (and refuses another --data
    # list), so no validation image is ever trained on; --val-data replaces the split with a folder of its own.
    if cfg.val_data:
        train_set, val_set, split = validation_folder(cfg, spec, env, data)
    else:
        split = read_or_make_split(cfg, data, resuming=saved is not None)
        train_set, val_set = split_subsets(cfg, data, split)
    # Few photos: a recipe counted in epochs takes a handful of steps; min_steps (200 in the fine-tuning recipe)
    # scales the batch and the epochs to the data set, and says so. 16 photos a species: 0.73 → 0.82 (model card).
    cfg = fit_to_data(cfg, len(train_set.rows), env)
    # No validation image (--val-fraction 0): nothing can choose an epoch, so the last one ships; the folds of
    # the same recipe (--calibrate-from) give the temperature, the thresholds and the accuracy reported, read
    # and checked now so that a wrong folder stops the run before it trains (training/final.py).
    cfg, evidence = without_validation(cfg, env, data, len(val_set.rows))
    # Teacher (--teacher): a soft label for every training image from out-of-fold predictions, checked against
    # this run's classes and labels; a resumed run must read the same bytes it started with (the checkpoint's
    # sha256), or its targets would change mid-run.
    teacher = read_teacher(cfg.teacher, data.classes, train_set) if cfg.teacher else None
    if saved is not None:
        check_resumed(saved["info"], teacher, run)

    # Model: from ImageNet, --weights, --init or scratch; on the device (channels-last is faster for
    # convolutions) before the EMA copies it and the optimizer takes its parameters.
    model, init = build_model(cfg, data.classes, train_set, spec)
    model = model.to(env.device, memory_format=torch.channels_last) if cfg.channels_last else model.to(env.device)
    precision = choose_precision(cfg.precision, env.device)
    # Everything the epochs read and change, in one place. The EMA of the weights is what is evaluated
    # and shipped (steadier than the last step's); the scaler only acts under fp16.
    state = TrainState(
        cfg=cfg, env=env, spec=spec, classes=data.classes, train_set=train_set, val_set=val_set, init=init,
        model=model, ema=EMA(model, cfg.ema_decay) if cfg.ema else None,
        optimizer=torch.optim.AdamW(param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay),
        loader=make_loader(cfg, env, train_set, len(data.classes), teacher), precision=precision,
        scaler=torch.amp.GradScaler(env.device.split(":")[0], enabled=precision == "fp16"),
        class_weights=class_weights(cfg, train_set, len(data.classes), env.device),
        teacher=teacher.record(cfg.teacher_weight) if teacher else None, evidence=evidence)
    # A resumed run puts back the checkpoint's weights, EMA, optimizer, step and best score, and goes on
    # with the next epoch: the schedule, the shuffles and the augmentations continue where they stopped.
    first_epoch = restore(state, saved) if saved is not None else 0
    if env.is_main:
        write_run_header(cfg, data.classes, split, resumed=saved is not None)
    if env.distributed:  # after restoring: the checkpoint holds the bare network's names
        state.model = torch.nn.parallel.DistributedDataParallel(state.model)
    D.log(env, f"training {cfg.model} on {len(train_set.rows)} images ({len(val_set.rows)} validation), "
               f"{len(data.classes)} classes, {cfg.image_size}px, {precision}, {env.world_size} process(es), "
               f"epochs {first_epoch + 1}–{cfg.epochs}")

    t0, before = time.perf_counter(), state.trained_s  # a resumed run's wall time counts its earlier sessions
    for epoch in range(first_epoch, cfg.epochs):
        state.epoch = epoch
        started = time.perf_counter()
        # Train: one pass over this epoch's shuffle; each process takes its own slice of it and DDP
        # averages the gradients, so N processes take the steps one process would.
        images = len(state.loader) * state.loader.batch_size * env.world_size
        with bar(images, f"epoch {epoch + 1}/{cfg.epochs}", enabled=progress) as advance:
            stats = train_one_epoch(state, advance)
        # Evaluate: the EMA weights (when on) on the whole validation split, sharded and all-reduced,
        # so every process knows whether this epoch is the best so far.
        cm, val_loss = evaluate_sharded(state)
        report = report_from_confusion(cm, data.classes)
        row = {"epoch": epoch + 1, **stats, "val_loss": val_loss, "val_acc": report["accuracy"],
               "val_f1_micro": report["f1_micro"], "val_f1_macro": report["f1_macro"],
               "epoch_s": time.perf_counter() - started, "world_size": env.world_size, "precision": precision}
        improved = len(val_set.rows) > 0 and report["f1_micro"] > state.best["f1_micro"]
        if improved:
            state.best = {"f1_micro": report["f1_micro"], "f1_macro": report["f1_macro"],
                          "accuracy": report["accuracy"], "epoch": epoch + 1}
        # Checkpoint: rank 0 writes the best weights, the metrics row and the checkpoint, each one
        # atomically, so a run killed at any moment resumes from its last finished epoch.
        state.trained_s = before + time.perf_counter() - t0
        if env.is_main:  # --keep last: the weights of every epoch replace the last ones (folds choose nothing)
            save_epoch(state, row, improved or cfg.keep == "last")
            D.log(env, epoch_line(state, row, improved))
        D.barrier(env)  # no process starts the next epoch before the checkpoint of this one is complete

    # Finish: calibrate the best weights, fit the "not a seedling" detector, write model.json and plots.
    if env.is_main:
        finish(state, wall=before + time.perf_counter() - t0)
    D.barrier(env)
    return run


# -- prepare and split ----------------------------------------------------------------------------------

def prepare_data(roots: str | list[str], spec: PreprocessSpec, cfg: TrainConfig, env: D.DistEnv,
                 progress: bool) -> PreparedData:
    """The prepared cache of each folder of ``roots``, joined (data/sources.py): the first process of each node
    builds them while the others wait, then they read them."""
    if cfg.teacher:  # a teacher file that is not there stops the run now, not after minutes of preparing
        check_readable(cfg.teacher)
    if cfg.calibrate_from:  # so does a folds folder that holds no finished fold
        final.check_folder(cfg.calibrate_from)
    roots = [roots] if isinstance(roots, str) else roots
    options = {"cache_root": cfg.cache_dir, "bad_images": cfg.bad_images}
    if len(roots) > 1:  # a folder joined with others may hold one species (feedback on a single one)
        options["min_classes"] = 1
    if env.is_local_main:
        parts = [prepare(root, spec, **options, progress=progress and env.is_main) for root in roots]
    D.barrier(env)
    if not env.is_local_main:
        parts = [prepare(root, spec, **options, progress=False) for root in roots]
    data = join(parts)
    if data.bad:
        D.log(env, f"{', '.join(roots)}: skipped {len(data.bad)} unusable image(s) (first: {data.bad[0]['path']}: "
                   f"{data.bad[0]['reason']}); --bad-images fail stops instead")
    note = duplicates_note(data)
    if note:
        D.log(env, note)
    return data


def read_or_make_split(cfg: TrainConfig, data: PreparedData, resuming: bool) -> Split:
    """The run's own split when it resumes, else a new stratified one (seeded by --split-seed or --seed)."""
    split_path = Path(cfg.out) / SPLIT
    if resuming and split_path.is_file():
        split = Split.load(split_path)
        check_same_folders(split, data, cfg)
        return split
    split_seed = cfg.seed if cfg.split_seed is None else cfg.split_seed
    if cfg.folds:
        split = fold_split(data.files, data.labels.tolist(), cfg.folds, cfg.fold, split_seed)
    else:
        split = stratified_split(data.files, data.labels.tolist(), cfg.val_fraction, split_seed)
    return dataclasses.replace(split, sources=data.sources)  # None for one folder: its split.json as before


def check_same_folders(split: Split, data: PreparedData, cfg: TrainConfig) -> None:
    """A resumed run names its files as its split.json does: the same --data folders, in the same order."""
    def folders(sources: list[dict] | None) -> list[tuple[str, str]]:
        return [(s["folder"], s["prefix"]) for s in sources or []]

    if folders(split.sources) != folders(data.sources):
        was = "--data " + ", ".join(s["folder"] for s in split.sources) if split.sources else "one --data folder"
        raise SeedlingsError(f"--resume: {cfg.out} was trained on {was}, not on --data "
                             f"{', '.join(cfg.data_folders())}; resume with the same --data folders in the same "
                             "order, or start a new run in another --out")


def without_validation(cfg: TrainConfig, env: D.DistEnv, data: PreparedData,
                       n_val: int) -> tuple[TrainConfig, final.FoldEvidence | None]:
    """A run with validation images is left as it is. Without: the last epoch ships (--keep last), and the
    folds of --calibrate-from are read (or the run says it will ship uncalibrated, without the unknown flag)."""
    if n_val:
        return cfg, None
    if cfg.keep != "last":
        D.log(env, "no validation images: the last epoch's weights ship (--keep last)")
        cfg = dataclasses.replace(cfg, keep="last")
    if not cfg.calibrate_from:
        D.log(env, "no validation images and no --calibrate-from: the model ships with temperature 1, no "
                   "'not a seedling' flag and no accuracy; give --calibrate-from CV_DIR (this recipe's "
                   "`train --folds K` run) to take them from its out-of-fold predictions")
        return cfg, None
    evidence = final.read_evidence(cfg.calibrate_from, data.classes, data.files, cfg.model, cfg.image_size)
    D.log(env, f"--calibrate-from {cfg.calibrate_from}: {evidence.folds} folds, out-of-fold micro-F1 "
               f"{evidence.report['f1_micro']:.4f} on {evidence.report['n']} images; temperature "
               f"{evidence.calibration.temperature:.3f}")
    return cfg, evidence


def fit_to_data(cfg: TrainConfig, n_train: int, env: D.DistEnv) -> TrainConfig:
    """At least ``cfg.min_steps`` optimizer steps: on a small set, a smaller batch (about 12 steps an epoch,
    never under 8 images) and more epochs. Large sets are left as they are (3,424 photos at batch 48 take
    710 steps in 10 epochs). The run's config.yaml records the values used."""
    if not cfg.min_steps or n_train == 0:
        return cfg
    batch = max(min(cfg.batch_size, n_train // 12), min(8, cfg.batch_size), env.world_size)
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / max(1, n_train // batch)))
    if (batch, epochs) == (cfg.batch_size, cfg.epochs):
        return cfg
    D.log(env, f"{n_train} training images: batch {batch} and {epochs} epochs, for at least {cfg.min_steps} optimizer "
               f"steps (--min-steps; --min-steps 0 keeps batch {cfg.batch_size} and {cfg.epochs} epochs)")
    return dataclasses.replace(cfg, batch_size=batch, epochs=epochs)


def split_subsets(cfg: TrainConfig, data: PreparedData, split: Split) -> tuple[Subset, Subset]:
    train_rows, val_rows = data.subset(split.train), data.subset(split.val)
    missing = set(range(len(data.classes))) - set(data.labels[train_rows].tolist())
    if missing:
        names = ", ".join(data.classes[i] for i in sorted(missing))
        raise SeedlingsError(f"{', '.join(cfg.data_folders())}: class(es) {names} have no training images after "
                             "the split; add images (at least 2 per class) or lower --val-fraction")
    return (Subset(data.images, data.labels, train_rows, data.files),
            Subset(data.images, data.labels, val_rows, data.files))


def validation_folder(cfg: TrainConfig, spec: PreprocessSpec, env: D.DistEnv, data: PreparedData):
    """--val-data: every image of ``data`` trains, the other folder validates (its labels in ``data``'s order)."""
    val = prepare_data(cfg.val_data, spec, cfg, env, False)
    extra = [c for c in val.classes if c not in data.classes]
    if extra:
        raise SeedlingsError(f"--val-data {cfg.val_data}: class(es) {', '.join(extra)} are in validation but "
                             f"not in training ({', '.join(cfg.data_folders())}); the model cannot learn them. "
                             "Add them to the training folder or remove them from validation")
    remap = np.asarray([data.classes.index(c) for c in val.classes])
    train_set = Subset(data.images, data.labels, np.arange(len(data.files)), data.files)
    return train_set, Subset(val.images, remap[val.labels], np.arange(len(val.files)), val.files), None


# -- model, optimizer, batches --------------------------------------------------------------------------

def build_model(cfg: TrainConfig, classes: list[str], train_set: Subset, spec: PreprocessSpec):
    """The network to train and where its weights came from (ImageNet, a seedlings model, a file, scratch)."""
    if not cfg.init:
        model = create_model(cfg.model, len(classes), pretrained=cfg.pretrained, weights=cfg.weights,
                             drop_path=cfg.drop_path)
        return model, init_record(cfg)
    rows = train_set.rows[:256]  # the same images in every process: identical models under torchrun
    batches = [to_model_input(torch.from_numpy(np.asarray(train_set.images[rows[i:i + 64]])), spec)
               for i in range(0, len(rows), 64)]
    return load_init(cfg.init, lambda n: create_model(cfg.model, n, drop_path=cfg.drop_path), classes, batches)


def init_record(cfg: TrainConfig) -> dict:
    """Where the initial weights came from (the model card and model.json say it)."""
    if cfg.pretrained:
        return pretrained.WEIGHTS[cfg.model].to_dict()
    if cfg.weights:
        return {"kind": "file", "file": Path(cfg.weights).name}
    return {"kind": "scratch"}


def param_groups(model, cfg: TrainConfig) -> list[dict]:
    """The new classifier at ``lr``; the rest at ``lr × backbone_lr`` when it starts from learned weights
    (ImageNet, --weights or --init), so fine-tuning adapts the features instead of overwriting them.
    The learned group is marked ``learned``: --freeze-epochs holds it still at first (loop.py)."""
    head_ids = {id(p) for p in classifier(model).parameters()}
    learned = bool(cfg.pretrained or cfg.weights or cfg.init)
    body = [p for p in model.parameters() if id(p) not in head_ids]
    heads = [p for p in model.parameters() if id(p) in head_ids]
    groups = ({"params": body, "lr_scale": cfg.backbone_lr if learned else 1.0, "learned": learned},
              {"params": heads, "lr_scale": 1.0, "learned": False})
    return [g for g in groups if g["params"]]


def make_loader(cfg: TrainConfig, env: D.DistEnv, train_set: Subset, num_classes: int,
                teacher: Teacher | None = None) -> DataLoader:
    """Batches of this process's share of the training images: ``batch_size`` is global, split across processes.
    With a teacher each image brings its soft-label row along, so the shuffles are the same as without."""
    per_rank = max(1, cfg.batch_size // env.world_size)
    dataset = CachedImages(train_set.images, train_set.labels, train_set.rows,
                           teacher.probs if teacher else None)
    if cfg.balance == "sampler":
        sampler = WeightedDistributedSampler(train_set.labels[train_set.rows], num_classes, env.world_size,
                                             env.rank, cfg.seed)
    else:
        sampler = DistributedSampler(dataset, num_replicas=env.world_size, rank=env.rank, shuffle=True,
                                     seed=cfg.seed, drop_last=True)
    drop_last = len(sampler) > per_rank
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, num_workers=0, drop_last=drop_last)


def class_weights(cfg: TrainConfig, train_set: Subset, num_classes: int, device: str) -> torch.Tensor | None:
    """--balance loss: each class's loss weighted by the inverse of its share of the training images."""
    if cfg.balance != "loss":
        return None
    counts = np.bincount(train_set.labels[train_set.rows], minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32, device=device)


def epoch_line(state: TrainState, row: dict, improved: bool) -> str:
    val = (f"  val_loss {row['val_loss']:.4f}  val_f1 {row['val_f1_micro']:.4f}" if len(state.val_set.rows)
           else "  (no validation images)")
    return (f"epoch {row['epoch']}/{state.cfg.epochs}  loss {row['train_loss']:.4f}  acc {row['train_acc']:.4f}"
            f"{val}  {row['epoch_s']:.0f}s{'  *best*' if improved else ''}")


# -- finish: calibration, the "not a seedling" detector, model.json, plots ------------------------------

def finish(state: TrainState, wall: float) -> None:
    """From the best weights: temperature and unknown threshold, the feature-distance detector, report.json,
    model.json (listing the weight files with their sha256) and the plots."""
    run, cfg, classes = Path(state.cfg.out), state.cfg, state.classes
    model = create_model(cfg.model, len(classes))
    model.load_state_dict(load_weights(run / WEIGHTS))
    if state.evidence is not None:  # every image trained: the recipe's folds calibrate (training/final.py)
        calibration, rule, report = calibrate_from_folds(state, model)
    else:
        calibration, rule, report, logits = calibrate_run(model, state.val_set, state.spec, classes)
    if len(state.val_set.rows):
        write_predictions(run / VAL_PREDICTIONS, state.val_set, classes, calibration.probabilities(logits))
        rule = novelty.fit_run(model, state.train_set, state.val_set, state.spec, len(classes), run,
                               calibration=calibration, rule=rule)
    atomic_write_json(run / "report.json", report)
    meta = build_model_file(state, calibration, rule, report)
    meta.extra["training"] = training_record(state, wall)
    meta.extra["params"] = sum(p.numel() for p in model.parameters())
    for f in (WEIGHTS, NOVELTY):
        if (run / f).is_file():
            meta.record_file(run, f)
    meta.save(run)
    plot_run(run, classes, report)
    D.log(state.env, f"done in {wall / 60:.1f} min: {final_score(state, report)}; run folder {run}")


def calibrate_from_folds(state: TrainState, model) -> tuple[Calibration, UnknownRule, dict]:
    """The folds' temperature, max-probability threshold and report; the distance detector fitted on every
    image, scaled as the folds found new photos to lie."""
    ev = state.evidence
    rule = novelty.fit_final(model, state.train_set, state.spec, len(state.classes), Path(state.cfg.out),
                             rule=ev.rule, ratio=ev.distance_ratio, threshold=ev.distance_threshold,
                             source=ev.record())
    return ev.calibration, rule, ev.report


def final_score(state: TrainState, report: dict) -> str:
    if state.evidence is not None:
        return f"out-of-fold micro-F1 of its recipe {report['f1_micro']:.4f} ({report['n']} images)"
    if not len(state.val_set.rows):
        return "no validation images, no score"
    return f"best validation micro-F1 {state.best['f1_micro']:.4f} (epoch {state.best['epoch']})"
