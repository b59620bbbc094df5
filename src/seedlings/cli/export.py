"""`seedlings export RUN_DIR [RUN_DIR…]`: an ONNX model folder (several runs: one averaging ensemble)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from seedlings.cli.command import Command
from seedlings.errors import UsageError


def add_parser(sub) -> argparse.ArgumentParser:
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
    p.add_argument("--fit-detector", action="store_true", dest="fit_detector",
                   help="a run trained before the 'not a seedling' detector existed: fit one from the run's data "
                        "into the exported model (the run folder is not changed)")
    return p


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    # lazy (both): export needs torch and onnx, the train extra
    if len(args.run) > 1:
        from seedlings.export.ensemble import export_ensemble

        if not args.out:
            raise UsageError("export of several runs (an ensemble) needs --out MODEL_DIR")
        out = Path(args.out)
        export_ensemble(args.run, out, precision=args.precision, half=args.half, log=_log)
    else:
        from seedlings.export.onnx import export_run

        out = Path(args.out) if args.out else Path(args.run[0]) / "model"
        export_run(args.run[0], out, precision=args.precision, half=args.half, log=_log,
                   fit_detector=args.fit_detector)
    print(f"exported {out}")
    return 0


COMMAND = Command("export", add_parser, run)
