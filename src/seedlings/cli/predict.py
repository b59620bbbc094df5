"""`seedlings predict PATH…`: the species in images and folders, as a table, JSON, CSV or a Kaggle submission."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from seedlings import batch
from seedlings.api import load_model
from seedlings.cli.command import MODEL_HELP, Command
from seedlings.errors import ImageError, UsageError
from seedlings.fileio import atomic_write_text
from seedlings.inference import Model, expand_inputs
from seedlings.tables import print_table

BATCH = 64  # images prepared before the model runs on them


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("predict", help="identify the species in images and folders")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files or folders of images")
    p.add_argument("--model", help=MODEL_HELP)
    p.add_argument("--top-k", type=int, default=3, dest="top_k")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--kaggle-csv", dest="kaggle_csv", help="also write a Kaggle submission (file,species)")
    p.add_argument("--tta", action="store_true", help="average the 8 rotations/flips of each image")
    p.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    archive = p.add_argument_group("photo archives (results as Parquet parts, resumable; the batch extra)")
    archive.add_argument("--out", help="write the results to this folder: part-*.parquet, errors-*.parquet, "
                                       "manifest-*.json; a rerun skips finished parts (see `seedlings results`)")
    archive.add_argument("--shard", help="I/N: only the files of shard I of N (a stable hash of each name); "
                                         "default: JOB_COMPLETION_INDEX/JOB_COMPLETIONS when set")
    archive.add_argument("--workers", type=int, help="processes decoding images (default: the CPU quota; 0: none)")
    archive.add_argument("--part-size", type=int, default=batch.PART_SIZE, dest="part_size",
                         help=f"images per Parquet part (default {batch.PART_SIZE})")
    return p


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: must be ≥ 1")
    if args.out is None and (args.shard or args.workers is not None):
        raise UsageError("--shard and --workers write Parquet parts: add --out DIR")
    model = load_model(args.model, precision=args.precision)
    if args.out is not None:
        return _to_folder(model, args)
    rows = predict_all(model, args.paths, args.top_k, args.tta)
    print_predictions(rows, args.format)
    if args.kaggle_csv:
        write_kaggle(rows, Path(args.kaggle_csv))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"seedlings predict: {r['file']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def _to_folder(model: Model, args: argparse.Namespace) -> int:
    job = batch.BatchJob(args.paths, Path(args.out), batch.parse_shard(args.shard), args.top_k, args.tta,
                         args.workers, args.part_size, progress=sys.stderr.isatty())
    manifest = batch.run(model, job)
    skipped = sum(p["skipped"] for p in manifest["parts"])
    print(f"{manifest['rows']} predictions and {manifest['errors']} unreadable files in {len(manifest['parts'])} "
          f"part(s) of shard {manifest['shard']} in {args.out}" + (f" ({skipped} part(s) already done)" if skipped
                                                                   else ""), file=sys.stderr)
    if args.kaggle_csv or args.format != "table":
        rows, errors = batch.read_results(args.out)
        finish_rows(result_rows(rows, errors), args)
    return 0


def result_rows(rows: list[dict], errors: list[dict]) -> list[dict]:
    """Parquet rows (and error rows) in the shape the table, JSON and CSV printers take."""
    out = [{"file": r["file"], "species": r["species"], "confidence": r["confidence"], "unknown": r["unknown"],
            "top_k": [{"species": s, "probability": p} for s, p in zip(r["top_k_species"], r["top_k_probability"])]}
           for r in rows]
    out += [{"file": e["file"], "error": e["error"]} for e in errors]
    return sorted(out, key=lambda r: r["file"])


def finish_rows(rows: list[dict], args: argparse.Namespace) -> None:
    print_predictions(rows, args.format)
    if args.kaggle_csv:
        write_kaggle(rows, Path(args.kaggle_csv))


class _Rows:
    """Prediction rows in input order; prepared images wait in ``pending`` until a batch is full."""

    def __init__(self, model: Model, top_k: int, tta: bool):
        self.model, self.top_k, self.tta = model, top_k, tta
        self.rows: list[dict] = []
        self.pending: list[tuple[int, np.ndarray]] = []  # (row index, prepared image)

    def add(self, source, label: str | None) -> None:
        try:
            self.pending.append((len(self.rows), self.model.prepare(source, label)))
            self.rows.append({"file": label})
        except ImageError as exc:
            self.rows.append({"file": label, "error": exc.reason})
        if len(self.pending) >= BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        probs, distance = self.model.assess(np.stack([arr for _, arr in self.pending]), tta=self.tta)
        preds = self.model.to_predictions(probs, self.top_k, distance=distance)  # both unknown signals
        for (slot, _), pred in zip(self.pending, preds):
            pred.file = self.rows[slot]["file"]
            self.rows[slot] = pred.to_dict()
        self.pending.clear()


def predict_all(model: Model, paths, top_k: int, tta: bool) -> list[dict]:
    """One row per image, in input order; unreadable files become error rows instead of stopping the run."""
    rows = _Rows(model, top_k, tta)
    for path in paths:
        try:
            items = expand_inputs(path)
        except ImageError as exc:
            rows.rows.append({"file": str(path), "error": exc.reason})
            continue
        for source, label in items:
            rows.add(source, label)
    rows.flush()
    return rows.rows


def print_predictions(rows: list[dict], fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif fmt == "csv":
        _print_csv(rows)
    else:
        _print_table(rows)


def _print_csv(rows: list[dict]) -> None:
    writer = csv.writer(sys.stdout)
    writer.writerow(["file", "species", "confidence", "unknown", "top_k"])
    for r in rows:
        if "error" in r:
            writer.writerow([r["file"], "", "", "", f"error: {r['error']}"])
        else:
            top = ";".join(f"{t['species']}:{t['probability']:.4f}" for t in r["top_k"])
            writer.writerow([r["file"], r["species"], f"{r['confidence']:.4f}", r["unknown"], top])


def _print_table(rows: list[dict]) -> None:
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["file"], "ERROR", "", r["error"]])
            continue
        top = ", ".join(f"{t['species']} {t['probability']:.1%}" for t in r["top_k"][1:])
        species = r["species"] + (" (unknown?)" if r["unknown"] else "")
        table.append([r["file"], species, f"{r['confidence']:.1%}", top])
    print_table("predictions", ["file", "species", "confidence", "runners-up"], table)


def write_kaggle(rows: list[dict], path: Path) -> None:
    """Kaggle's plant-seedlings submission format: header file,species; file name only."""
    lines = ["file,species"] + [f"{Path(r['file']).name},{r['species']}" for r in rows if "error" not in r]
    atomic_write_text(path, "\n".join(lines) + "\n")
    print(f"wrote {path} ({len(lines) - 1} rows)", file=sys.stderr)


COMMAND = Command("predict", add_parser, run)
