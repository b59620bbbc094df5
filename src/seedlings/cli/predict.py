"""`seedlings predict PATH…`: the species in images and folders, as a table, JSON, CSV or a Kaggle submission."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

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
    return p


def run(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise UsageError(f"--top-k {args.top_k}: must be ≥ 1")
    model = load_model(args.model, precision=args.precision)
    rows = predict_all(model, args.paths, args.top_k, args.tta)
    print_predictions(rows, args.format)
    if args.kaggle_csv:
        write_kaggle(rows, Path(args.kaggle_csv))
    failed = [r for r in rows if "error" in r]
    for r in failed:
        print(f"seedlings predict: {r['file']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


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
        probs = self.model.probabilities(np.stack([arr for _, arr in self.pending]), tta=self.tta)
        for (slot, _), pred in zip(self.pending, self.model.to_predictions(probs, self.top_k)):
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
