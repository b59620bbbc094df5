"""The run folder: what rank 0 writes there, each file atomically, and what a resumed run reads back.

    config.yaml, classes.json, split.json   written once, before the first epoch
    metrics.jsonl                           a row per epoch (rewritten: a redone epoch replaces its row)
    checkpoint.safetensors                  after every epoch: weights, EMA, optimizer, step, epoch, best
                                            (and --teacher's sha256: a resume must read the same file)
    weights.safetensors                     the best epoch's scored weights (the EMA's when it is on)
    model.json, report.json, plots          when training finishes (fit.finish)
    val_predictions.csv                     the same: file, true, calibrated probability of each class,
                                            for every validation image (a fold's out-of-fold predictions)
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import os
import sys
from pathlib import Path

from seedlings import __version__
from seedlings.artifact import SPLIT, WEIGHTS, Calibration, ModelFile, UnknownRule
from seedlings.config import TrainConfig
from seedlings.data import Split, Subset
from seedlings.errors import SeedlingsError
from seedlings.fileio import atomic_write_json, atomic_write_text
from seedlings.models import resolve_name
from seedlings.models.checkpoint import load_checkpoint, save_checkpoint, save_weights
from seedlings.training import distributed as D
from seedlings.training.loop import TrainState

CHECKPOINT = "checkpoint.safetensors"


def read_checkpoint(run: Path, resume: bool) -> dict | None:
    """The run's checkpoint when resuming; a run folder that already holds a run needs --resume."""
    ckpt = run / CHECKPOINT
    if ckpt.exists() and not resume:
        raise SeedlingsError(f"--out {run}: already holds a run; pass --resume to continue it, "
                             "or choose another --out")
    if resume and ckpt.exists():
        return dict(zip(("model", "ema", "optim", "info"), load_checkpoint(ckpt)))
    return None


def restore(state: TrainState, saved: dict) -> int:
    """Put the checkpoint's weights, EMA, optimizer and position back; returns the epoch to continue with."""
    info = saved["info"]
    state.model.load_state_dict(saved["model"])
    if state.ema is not None and saved["ema"] is not None:
        state.ema.module.load_state_dict(saved["ema"])
        state.ema.steps = int(info.get("ema_steps", 0))
    state.optimizer.load_state_dict(saved["optim"])
    state.step, state.best = int(info["step"]), info["best"]
    state.trained_s = float(info.get("trained_s", 0.0))
    D.log(state.env, f"resumed {Path(state.cfg.out)} from its checkpoint after epoch {info['epoch'] + 1} "
                     f"(best validation micro-F1 so far {info['best']['f1_micro']:.4f})")
    return int(info["epoch"]) + 1


def write_run_header(cfg: TrainConfig, classes: list[str], split: Split | None, resumed: bool) -> None:
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.yaml")
    atomic_write_json(run / "classes.json", classes)
    if split is not None and not (resumed and (run / SPLIT).exists()):
        split.save(run / SPLIT)


def save_epoch(state: TrainState, row: dict, write_weights: bool) -> None:
    """The shipped weights (when this epoch is the best, or with --keep last), the metrics row and the
    checkpoint, each atomic."""
    run = Path(state.cfg.out)
    if write_weights:
        save_weights(run / WEIGHTS, state.scored_model.state_dict(), {"epoch": state.epoch + 1})
    append_metrics(run / "metrics.jsonl", row)
    save_checkpoint(run / CHECKPOINT, state.raw_model, state.ema, state.optimizer,
                    {"epoch": state.epoch, "step": state.step, "best": state.best, "trained_s": state.trained_s,
                     "ema_steps": state.ema.steps if state.ema is not None else 0,
                     **({"teacher_sha256": state.teacher["sha256"]} if state.teacher else {})})


def append_metrics(path: Path, row: dict) -> None:
    """Rewrite metrics.jsonl atomically, dropping rows of epochs being redone after a resume."""
    rows = []
    if path.exists():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["epoch"] < row["epoch"]] + [row]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def write_predictions(path: Path, subset: Subset, classes: list[str], probs) -> None:
    """``file,true,<class>…``: each image's relative path, its label and its calibrated probabilities."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["file", "true", *classes])
    for row, p in zip(subset.rows, probs):
        writer.writerow([subset.files[row], classes[subset.labels[row]], *(f"{x:.6g}" for x in p)])
    atomic_write_text(path, buf.getvalue())


def build_model_file(state: TrainState, calibration: Calibration, unknown: UnknownRule, report: dict) -> ModelFile:
    backbone = resolve_name(state.cfg.model)
    now = datetime.datetime.now(datetime.timezone.utc)
    return ModelFile(
        name=f"seedlings-{backbone.name}", version=now.strftime("%Y.%m.%d.%H%M"), backbone=backbone.name,
        timm_name=backbone.timm_name, classes=list(state.classes), preprocess=state.spec, init=state.init,
        calibration=calibration, unknown=unknown,
        extra={"seedlings_version": __version__, "created": now.isoformat(timespec="seconds"),
               "metrics": {"split": report.get("split", "validation"), "n": report["n"],
                           "accuracy": report["accuracy"], "f1_micro": report["f1_micro"],
                           "f1_macro": report["f1_macro"],
                           "best_epoch": state.best["epoch"] if state.best["epoch"] > 0 else None, "tta": False,
                           **({"weights_epoch": state.cfg.epochs} if state.cfg.keep == "last" else {})}})


def command_line() -> str:
    """The command that trained the run, as recorded in model.json: the program's file name, not its path (a model
    file names no folder of the machine that trained it)."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""


def training_record(state: TrainState, wall: float) -> dict:
    cfg, env = state.cfg, state.env
    return {"epochs": cfg.epochs, "wall_s": round(wall, 1), "world_size": env.world_size,
            "precision": state.precision, "device": env.device, "n_train": len(state.train_set.rows),
            "n_val": len(state.val_set.rows), "data": cfg.data if isinstance(cfg.data, list) else str(cfg.data),
            **({"val_data": str(cfg.val_data)} if cfg.val_data else {}),
            **({"teacher": state.teacher} if state.teacher else {}), "command": command_line(),
            "host_cpus": os.cpu_count()}
