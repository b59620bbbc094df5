"""int8 calibrated on the first 64 validation images of a run (rows are in class order: one or two species) against
64 spread over all its rows (every species), scored on all its validation images.

    python bench/int8_calibration.py RUN_DIR [--work DIR]
    python bench/int8_calibration.py MODEL_DIR             e.g. src/seedlings/default_model (its model.onnx, split.json)

RUN_DIR: a finished run folder whose data folder is on this machine (exported first); MODEL_DIR: an exported model
folder with its fp32 model.onnx and split.json, whose data folder is on this machine. Prints fp32 and both int8
accuracies and the top-1 agreement with fp32; `seedlings export` uses the spread set since session 14 (model card).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from seedlings.artifact import ModelFile
from seedlings.export.onnx import run_data
from seedlings.export.quantize import onnx_probs, quantize_int8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--work", type=Path, default=None, help="where the ONNX files go (default: a temporary folder)")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="int8-calibration-"))
    model_file = ModelFile.load(args.run)
    _, val = run_data(args.run, model_file)
    if val is None or not len(val.rows):
        sys.exit(f"{args.run}: no validation images here (its data folder is missing, or it held none out)")
    fp32_graph = args.run / "model.onnx" if (args.run / "model.onnx").is_file() else work / "model.onnx"
    if not fp32_graph.is_file():
        subprocess.run([sys.executable, "-m", "seedlings", "export", str(args.run), "--out", str(work)], check=True,
                       capture_output=True)
    spec, images, labels = model_file.preprocess, np.asarray(val.images[val.rows]), np.asarray(val.labels[val.rows])
    fp32 = onnx_probs(fp32_graph, images, spec).argmax(1)
    print(f"{len(labels)} validation images; fp32 accuracy {(fp32 == labels).mean():.4f}")
    spread = np.unique(np.linspace(0, len(val.rows) - 1, 64).astype(int))
    for name, rows in (("first 64", val.rows[:64]), ("64 spread", val.rows[spread])):
        species = len(set(val.labels[rows].tolist()))
        quantize_int8(fp32_graph, work / "int8.onnx", np.asarray(val.images[rows]), spec, log=lambda *a: None)
        int8 = onnx_probs(work / "int8.onnx", images, spec).argmax(1)
        print(f"int8 calibrated on the {name} ({species} species): accuracy {(int8 == labels).mean():.4f}, "
              f"top-1 agreement with fp32 {(int8 == fp32).mean():.2%}")


if __name__ == "__main__":
    main()
