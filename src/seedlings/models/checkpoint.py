"""Checkpoints and weights in safetensors (never pickles), written atomically.

A checkpoint is one safetensors file: ``model.*``, ``ema.*`` and ``optim.*`` tensors plus JSON
metadata (epoch, best score, optimizer hyper-parameters), so one rename makes it current.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from seedlings import __version__
from seedlings.errors import SeedlingsError
from seedlings.fileio import atomic_write

CHECKPOINT_FORMAT = 1


def _clean(state: dict) -> dict:
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save_weights(path: str | Path, state_dict: dict, metadata: dict | None = None) -> None:
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    atomic_write(path, lambda tmp: save_file(_clean(state_dict), tmp, metadata=meta))


def load_weights(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise SeedlingsError(f"{path}: weights file not found")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SeedlingsError(f"{path}: not a readable safetensors file ({exc})") from exc


def _flatten_optimizer(opt_state: dict) -> tuple[dict, dict]:
    tensors, scalars = {}, {}
    for idx, st in opt_state["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{idx}.{key}"] = val
            else:
                scalars[f"{idx}.{key}"] = val
    groups = [{k: v for k, v in g.items()} for g in opt_state["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state: dict = {}
    for name, val in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = val
    for name, val in meta["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = val
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str | Path, model, ema, optimizer, info: dict) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    tensors.update(opt_tensors)
    meta = {"format": CHECKPOINT_FORMAT, "seedlings_version": __version__, "optimizer": opt_meta, **info}
    atomic_write(path, lambda tmp: save_file(_clean(tensors), tmp, metadata={"info": json.dumps(meta)}))


def load_checkpoint(path: str | Path) -> tuple[dict, dict | None, dict, dict]:
    """(model state, ema state or None, optimizer state, info) of a checkpoint file."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            info = json.loads((fh.metadata() or {}).get("info", "{}"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SeedlingsError(f"{path}: checkpoint is unreadable ({exc}); delete it to start over") from exc
    if info.get("format") != CHECKPOINT_FORMAT:
        raise SeedlingsError(
            f"{path}: checkpoint format {info.get('format')} from seedlings {info.get('seedlings_version')} "
            f"cannot be resumed by seedlings {__version__} (format {CHECKPOINT_FORMAT}); "
            "start a new run folder")
    tensors = load_weights(path)
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    optim = _unflatten_optimizer({k: v for k, v in tensors.items() if k.startswith("optim.")},
                                 info.pop("optimizer"))
    return model, ema, optim, info
