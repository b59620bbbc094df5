"""Export several finished runs as one model: the mean of their probabilities, in one ONNX graph.

The members must predict the same species from the same input (image size, normalisation) and
must have been validated on the same split (train them with the same --split-seed), so that the
ensemble can be scored, calibrated and given its "unknown" thresholds on images none of them saw.
"""

from __future__ import annotations

import datetime
import json
import tempfile
from pathlib import Path

from seedlings.errors import SeedlingsError
from seedlings.export.onnx import check_precision, finished_run, load_run_model, run_data, write_model_folder
from seedlings.preprocess import PreprocessSpec


def check_members(runs: list[Path], metas: list[dict]) -> None:
    """Refuse members that do not fit together, naming the run and what differs."""
    first, base = runs[0], metas[0]
    split0 = (first / "split.json").read_text() if (first / "split.json").is_file() else None
    if split0 is None:
        raise SeedlingsError(f"{first}: has no split.json; an ensemble is scored on its members' shared "
                             "validation split (runs trained with --val-data cannot be ensembled yet)")
    for run, meta in zip(runs[1:], metas[1:]):
        for key in ("classes", "image_size", "preprocess"):
            if meta[key] != base[key]:
                raise SeedlingsError(f"{run}: its {key} differ from {first}'s; ensemble members must share "
                                     "classes, image size and preprocessing")
        split = (run / "split.json").read_text() if (run / "split.json").is_file() else None
        if split is None or json.loads(split) != json.loads(split0):
            raise SeedlingsError(f"{run}: validated on another split than {first}; train every member with "
                                 "the same --split-seed (and data) so the ensemble has unseen validation images")
    if len({str(r.resolve()) for r in runs}) < len(runs):
        raise SeedlingsError("the same run is given twice; an ensemble needs different members")


def export_ensemble(runs: list[str | Path], out: str | Path, precision: str = "fp32", half: bool = False,
                    log=print) -> Path:
    """Score, calibrate and export the mean-probability ensemble of ``runs`` as one model folder."""
    from seedlings.evaluation.calibrate import calibrate_run
    from seedlings.models.ensemble import Ensemble
    from seedlings.training import novelty
    from seedlings.training.fit import Subset

    runs, out = [Path(r) for r in runs], Path(out)
    if len(runs) < 2:
        raise SeedlingsError("an ensemble needs at least two run folders")
    metas = [finished_run(run) for run in runs]
    check_precision(precision)
    check_members(runs, metas)
    data, split = run_data(runs[0], metas[0])
    if data is None:
        raise SeedlingsError(f"{metas[0]['training'].get('data')}: the members' data folder is not here; "
                             "exporting an ensemble scores and calibrates it on their validation images")
    spec = PreprocessSpec.from_dict(metas[0]["preprocess"])
    ensemble = Ensemble([load_run_model(run, meta) for run, meta in zip(runs, metas)]).eval()
    train_set, val_set = (Subset(data.images, data.labels, data.subset(names)) for names in (split.train, split.val))
    calib, report = calibrate_run(ensemble, val_set, spec, metas[0]["classes"])
    log(f"ensemble of {len(runs)}: validation micro-F1 {report['f1_micro']:.4f} (members: "
        + ", ".join(f"{m['metrics']['f1_micro']:.4f}" for m in metas) + ")")
    with tempfile.TemporaryDirectory(prefix="seedlings-ensemble-") as work:
        unknown = novelty.fit_run(ensemble, train_set, val_set, spec, len(metas[0]["classes"]), Path(work))
        graph = novelty.wrap(ensemble, Path(work))
    meta = ensemble_metadata(runs, metas, report, calib, unknown)
    return write_model_folder(graph, ensemble, meta, spec, runs[0], out, precision, half, log, (data, split))


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
    import yaml

    try:
        return yaml.safe_load((run / "config.yaml").read_text()).get("seed")
    except (OSError, yaml.YAMLError, AttributeError):
        return None
