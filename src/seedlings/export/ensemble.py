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

from seedlings import __version__
from seedlings.artifact import NOVELTY, SPLIT, Calibration, ModelFile, UnknownRule
from seedlings.errors import SeedlingsError
from seedlings.evaluation.calibrate import calibrate_run
from seedlings.export.onnx import (
    Export,
    check_precision,
    data_folder,
    data_folders,
    finished_run,
    run_config,
    run_data,
    val_data_of,
    write_model_folder,
)
from seedlings.models import novelty
from seedlings.models.backend import load_network
from seedlings.models.ensemble import Ensemble


def check_members(runs: list[Path], files: list[ModelFile]) -> None:
    """Refuse members that do not fit together, naming the run and what differs."""
    first, base = runs[0], files[0]
    held_out = _validation(first, base)
    if held_out is None:
        raise SeedlingsError(f"{first}: has neither split.json nor a --val-data folder; an ensemble is scored "
                             "on its members' shared validation images")
    for run, member in zip(runs[1:], files[1:]):
        for key in ("classes", "image_size", "preprocess"):
            if getattr(member, key) != getattr(base, key):
                raise SeedlingsError(f"{run}: its {key} differ from {first}'s; ensemble members must share "
                                     "classes, image size and preprocessing")
        if _validation(run, member) != held_out:
            raise SeedlingsError(f"{run}: validated on other images than {first}; train every member on the same "
                                 "data with the same --split-seed (or the same --val-data folder) so the ensemble "
                                 "has validation images none of them trained on")
    if len({str(r.resolve()) for r in runs}) < len(runs):
        raise SeedlingsError("the same run is given twice; an ensemble needs different members")


def _validation(run: Path, model_file: ModelFile):
    """What a run was validated on: its --val-data and data folders, or its split; None if unknown."""
    val_data = val_data_of(run, model_file)
    if val_data:
        data = [str(Path(d).resolve()) for d in data_folders(run, model_file)]
        return "val_data", str(Path(val_data).resolve()), data
    if (run / SPLIT).is_file():
        return "split", json.loads((run / SPLIT).read_text())
    return None


def export_ensemble(runs: list[str | Path], out: str | Path, precision: str = "fp32", half: bool = False,
                    log=print) -> Path:
    """Score, calibrate and export the mean-probability ensemble of ``runs`` as one model folder."""
    runs, out = [Path(r) for r in runs], Path(out)
    if len(runs) < 2:
        raise SeedlingsError("an ensemble needs at least two run folders")
    files = [finished_run(run) for run in runs]
    check_precision(precision)
    check_members(runs, files)
    train_set, val_set = run_data(runs[0], files[0])
    if val_set is None:
        raise SeedlingsError(f"{data_folder(runs[0], files[0])}: the members' data folder (or --val-data "
                             "folder) is not here; exporting an ensemble scores and calibrates it on their "
                             "validation images")
    spec, classes = files[0].preprocess, files[0].classes
    ensemble = Ensemble([load_network(run, member)[0] for run, member in zip(runs, files)]).eval()
    calibration, rule, report, _ = calibrate_run(ensemble, val_set, spec, classes)
    log(f"ensemble of {len(runs)}: validation micro-F1 {report['f1_micro']:.4f} (members: "
        + ", ".join(f"{m.metrics['f1_micro']:.4f}" for m in files) + ")")
    with tempfile.TemporaryDirectory(prefix="seedlings-ensemble-") as work:
        unknown = novelty.fit_run(ensemble, train_set, val_set, spec, len(classes), Path(work),
                                  calibration=calibration, rule=rule)
        graph = novelty.wrap(ensemble, Path(work) / NOVELTY)
    model_file = ensemble_file(runs, files, report, calibration, unknown)
    return write_model_folder(graph, ensemble, model_file, Export(runs[0], out, precision, half, log, val_set))


def ensemble_file(runs: list[Path], files: list[ModelFile], report: dict, calibration: Calibration,
                  unknown: UnknownRule) -> ModelFile:
    base = files[0]
    backbones = sorted({m.backbone for m in files})
    now = datetime.datetime.now(datetime.timezone.utc)
    return ModelFile(
        name=f"seedlings-{'+'.join(backbones)}-ensemble{len(runs)}", version=now.strftime("%Y.%m.%d.%H%M"),
        backbone="+".join(backbones), timm_name=base.timm_name, classes=list(base.classes),
        preprocess=base.preprocess, calibration=calibration, unknown=unknown,
        init=base.init if all(m.init == base.init for m in files) else {"kind": "members (see ensemble.members)"},
        extra={
            "seedlings_version": base.get("seedlings_version", __version__),
            "created": now.isoformat(timespec="seconds"),
            "metrics": {"split": "validation", "n": report["n"], "accuracy": report["accuracy"],
                        "f1_micro": report["f1_micro"], "f1_macro": report["f1_macro"], "tta": False},
            "ensemble": {"combine": "mean of the members' probabilities",
                         "members": [_member(run, m) for run, m in zip(runs, files)]},
            "params": sum(m.get("params") or 0 for m in files),
            "training": {**base.training, "wall_s": max(m.training.get("wall_s", 0) for m in files),
                         "members_wall_s": [m.training.get("wall_s") for m in files]},
            "source_run": str(runs[0]),  # where split.json lives (every member has the same one)
        })


def _member(run: Path, model_file: ModelFile) -> dict:
    return {"run": str(run), "backbone": model_file.backbone, "seed": run_config(run).get("seed"),
            "f1_micro": model_file.metrics["f1_micro"], "best_epoch": model_file.metrics.get("best_epoch"),
            "params": model_file.get("params"), "training": model_file.training, "init": model_file.init}
