"""`seedlings models`: the backbones with parameters and FLOPs."""

from __future__ import annotations

import argparse
import json

from seedlings.cli.command import Command
from seedlings.config import TrainConfig
from seedlings.models import describe_models
from seedlings.tables import print_table


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("models", help="list backbones with parameters and FLOPs")
    p.add_argument("--image-size", type=int, default=TrainConfig.image_size, dest="image_size",
                   help=f"input size the FLOPs are counted at (default {TrainConfig.image_size}, as train)")
    p.add_argument("--json", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    rows = describe_models(args.image_size)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print_table(f"Backbones (12 classes, {args.image_size}px)",
                ["name", "family", "ImageNet weights", "params (M)", "GFLOPs", "timm", "note"],
                [[r["name"] + (" *" if r["default"] else ""), r["family"], "local" if r["imagenet"] else "–",
                  f"{r['params_m']:.2f}", f"{r['gflops']:.2f}", r["timm"], r["note"]] for r in rows])
    print("* the from-scratch default. 'local': `train --model NAME --pretrained` starts from ImageNet weights "
          "installed with the train extra (no download)")
    return 0


COMMAND = Command("models", add_parser, run)
