"""`seedlings evaluate`: accuracy, F1, per-class report and confusion matrix of a model on a labelled folder."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from seedlings.api import load_model
from seedlings.cli.command import MODEL_HELP, Command
from seedlings.errors import UsageError
from seedlings.evaluation.report import evaluate, print_report, public, write_errors, write_plots


def add_parser(sub) -> argparse.ArgumentParser:
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
    return p


def check_outputs(args: argparse.Namespace) -> None:
    """Refuse an --errors folder or a --plots file before the (long) scoring starts."""
    if args.errors and Path(args.errors).is_dir():
        raise UsageError(f"--errors {args.errors}: is a folder; give the CSV file to write, "
                         f"e.g. {Path(args.errors) / 'errors.csv'}")
    if args.plots and Path(args.plots).exists() and not Path(args.plots).is_dir():
        raise UsageError(f"--plots {args.plots}: is a file; give a folder to write the PNG files into")


def run(args: argparse.Namespace) -> int:
    check_outputs(args)
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


COMMAND = Command("evaluate", add_parser, run)
