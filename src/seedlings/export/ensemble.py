"""Export several finished runs as one model: the mean of their probabilities, in one ONNX graph.

The members must predict the same species from the same input (image size, normalisation) and
must have been validated on the same images (the same split: train them with the same --split-seed;
or the same --val-data folder), so that the ensemble can be scored, calibrated and given its
"unknown" thresholds on images none of them saw.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path

from seedlings.errors import SeedlingsError
from seedlings.export.onnx import (
    check_precision,
    finished_run,
    load_run_model,
    run_config,
    run_data,
    val_data_of,
    write_model_folder,
)
from seedlings.preprocess import PreprocessSpec


def check_members(runs: list[Path], metas: list[dict]) -> None:
    """Refuse members that do not fit together, naming the run and what differs."""
    first, base = runs[0], metas[0]
    held_out = _validation(first, base)
    if held_out is None:
        raise SeedlingsError(f"{first}: has neither split.json nor a --val-data folder; an ensemble is scored "
                             "on its members' shared validation images")
    for run, meta in zip(runs[1:], metas[1:]):
        for key in ("classes", "image_size", "preprocess"):
            if meta[key] != base[key]:
                raise SeedlingsError(f"{run}: its {key} differ from {first}'s; ensemble members must share "
                                     "classes, image size and preprocessing")
        if _validation(run, meta) != held_out:
            raise SeedlingsError(f"{run}: validated on other images than {first}; train every member on the same "
                                 "data with the same --split-seed (or the same --val-data folder) so the ensemble "
                                 "has validation images none of them trained on")
    if len({str(r.resolve()) for r in runs}) < len(runs):
        raise SeedlingsError("the same run is given twice; an ensemble needs different members")


def _validation(run: Path, meta: dict):
    """What a run was validated on: its --val-data and data folders, or its split; None if unknown."""
    val_data = val_data_of(run, meta)
    if val_data:
        return "val_data", str(Path(val_data).resolve()), str(Path(meta["training"]["data"]).resolve())
    if (run / "split.json").is_file():
        return "split", json.loads((run / "split.json").read_text())
    return None


def export_ensemble(runs: list[str | Path], out: str | Path, precision: str = "fp32", half: bool = False,
                    log=print) -> Path:
    """Score, calibrate and export the mean-probability ensemble of ``runs`` as one model folder."""
    from seedlings.evaluation.calibrate import calibrate_run
    from seedlings.models.ensemble import Ensemble
    from seedlings.training import novelty

    runs, out = [Path(r) for r in runs], Path(out)
    if len(runs) < 2:
        raise SeedlingsError("an ensemble needs at least two run folders")
    metas = [finished_run(run) for run in runs]
    check_precision(precision)
    check_members(runs, metas)
    train_set, val_set = run_data(runs[0], metas[0])
    if val_set is None:
        raise SeedlingsError(f"{metas[0]['training'].get('data')}: the members' data folder (or --val-data "
                             "folder) is not here; exporting an ensemble scores and calibrates it on their "
                             "validation images")
    spec = PreprocessSpec.from_dict(metas[0]["preprocess"])
    ensemble = Ensemble([load_run_model(run, meta) for run, meta in zip(runs, metas)]).eval()
    calib, report = calibrate_run(ensemble, val_set, spec, metas[0]["classes"])
    log(f"ensemble of {len(runs)}: validation micro-F1 {report['f1_micro']:.4f} (members: "
        + ", ".join(f"{m['metrics']['f1_micro']:.4f}" for m in metas) + ")")
    with tempfile.TemporaryDirectory(prefix="seedlings-ensemble-") as work:
        unknown = novelty.fit_run(ensemble, train_set, val_set, spec, len(metas[0]["classes"]), Path(work))
        graph = novelty.wrap(ensemble, Path(work))
    meta = ensemble_metadata(runs, metas, report, calib, unknown)
    return write_model_folder(graph, ensemble, meta, spec, runs[0], out, precision, half, log, val_set)


def ensemble_metadata(runs: list[Path], metas: list[dict], report: dict, calib: dict, unknown: dict) -> dict:
    base = metas[0]
    backbones = sorted({m["backbone"] for m in metas})
    now = datetime.datetime.now(datetime.timezone.utc)
    meta = {key: base[key] for key in ("format", "seedlings_version", "image_size", "preprocess", "classes")}
    meta.update({
        "version": now.strftime("%Y.%m.%d.%H%M"), "created": now.isoformat(timespec="seconds"),
        "name": f"seedlings-{'+'.join(backbones)}-ensemble{len(runs)}",
        "backbone": "+".join(backbones), "timm_name": base.get("timm_name"),
        "metrics": {"split": "validation", "n": report["n"], "accuracy": report["accuracy"],
                    "f1_micro": report["f1_micro"], "f1_macro": report["f1_macro"], "tta": False},
        "calibration": calib["calibration"],
        "unknown": {**calib["unknown"], **unknown, "method": "max_probability+feature_distance"},
        "ensemble": {"combine": "mean of the members' probabilities", "members": [
            {"run": str(run.resolve()), "backbone": m["backbone"], "seed": _seed(run),
             "f1_micro": m["metrics"]["f1_micro"], "best_epoch": m["metrics"].get("best_epoch"),
             "params": m.get("params"), "training": m.get("training")} for run, m in zip(runs, metas)]},
        "params": sum(m.get("params") or 0 for m in metas),
        "training": {**base.get("training", {}),
                     "wall_s": max(m.get("training", {}).get("wall_s", 0) for m in metas),
                     "members_wall_s": [m.get("training", {}).get("wall_s") for m in metas]},
        "source_run": str(runs[0].resolve()),  # where split.json lives (every member has the same one)
    })
    return meta


def _seed(run: Path):
    return run_config(run).get("seed")
