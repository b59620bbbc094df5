"""Subcommands that use a model: evaluate, predict, export; serve and runs are wired in when present."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from seedlings.errors import ImageError, UsageError

MODEL_HELP = "model folder (exported) or finished run folder; default: the model shipped in the package"


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy, F1, per-class report and confusion matrix on a folder")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--data", required=True, help="labelled folder (one sub-folder per species)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--plots", help="write confusion_matrix.png, reliability.png and errors.png (the misclassified "
                                   "images) into this folder")
    p.add_argument("--errors", metavar="CSV",
                   help="write the misclassified images (file,true,predicted,confidence,unknown), most confident first")
    p.add_argument("--all", action="store_true", dest="all_images",
                   help="score every image, even when evaluating a run on the data it was trained on")
    p.add_argument("--tta", action="store_true", help="average the 8 rotations/flips of each image")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    p.add_argument("--bad-images", choices=["skip", "fail"], default="skip", dest="bad_images")


def cmd_evaluate(args) -> int:
    from seedlings.api import load_model
    from seedlings.evaluation.report import evaluate, print_report, public, write_errors, write_plots

    if args.errors and Path(args.errors).is_dir():
        raise UsageError(f"--errors {args.errors}: is a folder; give the CSV file to write, "
                         f"e.g. {Path(args.errors) / 'errors.csv'}")
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise UsageError(f"--plots {args.plots}: is a file; give a folder to write the PNG files into")
    model = load_model(args.model, precision=args.precision)
    report = evaluate(model, args.data, all_images=args.all_images, tta=args.tta, bad_images=args.bad_images,
                      progress=not args.json)
    if args.plots:
        written = write_plots(report, Path(args.plots))
        print("wrote " + ", ".join(map(str, written)), file=sys.stderr)
    if args.errors:
        n = write_errors(report, Path(args.errors))
        print(f"wrote {n} misclassified image(s) to {args.errors}", file=sys.stderr)
    if args.json:
        print(json.dumps(public(report), indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return 0


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="identify the species in images and folders")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--top-k", type=int, default=3, dest="top_k")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--kaggle-csv", dest="kaggle_csv", help="also write a Kaggle submission (file,species)")
    p.add_argument("--tta", action="store_true", help="average the 8 rotations/flips of each image")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")


def _predict_all(model, paths, top_k, tta) -> list[dict]:
    """One row per image, in input order; unreadable files become error rows instead of stopping the run."""
    import numpy as np

    from seedlings.inference import expand_inputs

    rows: list[dict | None] = []
    pending: list[tuple[int, np.ndarray]] = []  # (row index, prepared image) waiting for the model

    def flush() -> None:
        if pending:
            probs = model.probabilities(np.stack([arr for _, arr in pending]), tta=tta)
            for (slot, _), pred in zip(pending, model.to_predictions(probs, top_k)):
                pred.file = rows[slot]["file"]
                rows[slot] = pred.to_dict()
            pending.clear()

    for path in paths:
        try:
            items = expand_inputs(path)
        except ImageError as exc:
            rows.append({"file": str(path), "error": exc.reason})
            continue
        for source, label in items:
            try:
                pending.append((len(rows), model.prepare(source, label)))
                rows.append({"file": label})
            except ImageError as exc:
                rows.append({"file": label, "error": exc.reason})
            if len(pending) >= 64:
                flush()
    flush()
    return rows


def cmd_predict(args) -> int:
    from seedlings.api import load_model

    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: must be ≥ 1")
    model = load_model(args.model, precision=args.precision)
    rows = _predict_all(model, args.paths, args.top_k, args.tta)
    _print_predictions(rows, args.format)
    if args.kaggle_csv:
        _write_kaggle(rows, Path(args.kaggle_csv))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"seedlings predict: {r['file']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def _print_predictions(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if fmt == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(["file", "species", "confidence", "unknown", "top_k"])
        for r in rows:
            if "error" in r:
                writer.writerow([r["file"], "", "", "", f"error: {r['error']}"])
            else:
                top = ";".join(f"{t['species']}:{t['probability']:.4f}" for t in r["top_k"])
                writer.writerow([r["file"], r["species"], f"{r['confidence']:.4f}", r["unknown"], top])
        return
    from seedlings.tables import print_table

    table = []
    for r in rows:
        if "error" in r:
            table.append([r["file"], "ERROR", "", r["error"]])
            continue
        top = ", ".join(f"{t['species']} {t['probability']:.1%}" for t in r["top_k"][1:])
        species = r["species"] + (" (unknown?)" if r["unknown"] else "")
        table.append([r["file"], species, f"{r['confidence']:.1%}", top])
    print_table("predictions", ["file", "species", "confidence", "runners-up"], table)


def _write_kaggle(rows: list[dict], path: Path) -> None:
    """Kaggle's plant-seedlings submission format: header file,species; file name only."""
    from seedlings.fileio import atomic_write_text

    lines = ["file,species"]
    for r in rows:
        if "error" not in r:
            lines.append(f"{Path(r['file']).name},{r['species']}")
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(f"wrote {path} ({len(lines) - 1} rows)", file=sys.stderr)


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="export a finished run (or several, as one ensemble) to an ONNX model folder "
                                      "(parity-checked)")
    p.add_argument("run", metavar="RUN_DIR", nargs="+",
                   help="run folder; several runs trained on the same split make a mean-probability ensemble")
    p.add_argument("--format", choices=["onnx"], default="onnx")
    p.add_argument("--out", help="model folder to write (default RUN_DIR/model; required for an ensemble)")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32",
                   help="int8 also writes model.int8.onnx (static quantization calibrated on validation images)")
    p.add_argument("--half-weights", action="store_true", dest="half",
                   help="store model.onnx's weights as float16 (half the size, still computed in float32)")


def cmd_export(args) -> int:
    log = lambda m: print(m, file=sys.stderr)  # noqa: E731
    if len(args.run) > 1:
        from seedlings.export.ensemble import export_ensemble

        if not args.out:
            raise UsageError("export of several runs (an ensemble) needs --out MODEL_DIR")
        out = Path(args.out)
        export_ensemble(args.run, out, precision=args.precision, half=args.half, log=log)
    else:
        from seedlings.export.onnx import export_run

        out = Path(args.out) if args.out else Path(args.run[0]) / "model"
        export_run(args.run[0], out, precision=args.precision, half=args.half, log=log)
    print(f"exported {out}")
    return 0


def add_commands(sub, commands: dict) -> None:
    for add, name, handler in ((_add_evaluate, "evaluate", cmd_evaluate), (_add_predict, "predict", cmd_predict),
                               (_add_export, "export", cmd_export)):
        add(sub)
        commands[name] = handler
    _add_optional(sub, commands)


def _add_optional(sub, commands: dict) -> None:
    try:
        from seedlings.serving.cli import add_serve_command
    except ImportError:
        add_serve_command = None
    if add_serve_command is not None:
        add_serve_command(sub, commands)
    try:
        from seedlings.runs import add_runs_command
    except ImportError:
        add_runs_command = None
    if add_runs_command is not None:
        add_runs_command(sub, commands)

