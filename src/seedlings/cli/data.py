"""`seedlings data inspect DIR` and `seedlings data prepare DIR`."""

from __future__ import annotations

import argparse
import json
import sys

from seedlings.cli.command import Command
from seedlings.config import TrainConfig
from seedlings.data import prepare
from seedlings.data.inspect import inspect_folder, print_inspection


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("data", help="inspect or prepare a labelled image folder")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    i = dsub.add_parser("inspect", help="counts per class, image sizes, duplicates, problems")
    i.add_argument("dir")
    i.add_argument("--json", action="store_true")
    q = dsub.add_parser("prepare", help="decode and resize every image once into the cache")
    q.add_argument("dir")
    q.add_argument("--image-size", type=int, default=TrainConfig.image_size, dest="image_size",
                   help=f"the size `train` reads (default {TrainConfig.image_size}, as train)")
    q.add_argument("--cache-dir", dest="cache_dir")
    q.add_argument("--bad-images", choices=["skip", "fail"], default="skip", dest="bad_images")
    q.add_argument("--force", action="store_true", help="rebuild even if the cache is up to date")
    return p


def run(args: argparse.Namespace) -> int:
    return inspect(args) if args.data_cmd == "inspect" else prepare_cache(args)


def inspect(args: argparse.Namespace) -> int:
    result = inspect_folder(args.dir)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        print_inspection(result)
    return 0


def prepare_cache(args: argparse.Namespace) -> int:
    data = prepare(args.dir, args.image_size, cache_root=args.cache_dir, bad_images=args.bad_images,
                   force=args.force)
    state = "built" if data.rebuilt else "up to date"
    print(f"cache {state}: {data.cache_dir} ({len(data.files)} images at {data.image_size}px, "
          f"{len(data.classes)} classes, {len(data.bad)} skipped)")
    for b in data.bad:
        print(f"  skipped {b['path']}: {b['reason']}", file=sys.stderr)
    return 0


COMMAND = Command("data", add_parser, run, extra="train")
