"""`seedlings runs compare RUNS_DIR` (the sweep's leaderboard) and `seedlings runs sweep-item` (one sweep pod)."""

from __future__ import annotations

import argparse

from seedlings.cli.command import Command
from seedlings.runs import compare, sweep_item


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("runs", help="compare finished runs; run one experiment of a sweep")
    rsub = p.add_subparsers(dest="runs_cmd", required=True)
    c = rsub.add_parser("compare", help="leaderboard of the finished runs under a folder (table, .md, .png)")
    c.add_argument("runs_dir", metavar="RUNS_DIR")
    c.add_argument("--out", help="folder for leaderboard.md and leaderboard.png (default: RUNS_DIR)")
    s = rsub.add_parser("sweep-item", help="train experiment N of a sweep file (one pod of the sweep Job)")
    s.add_argument("--experiments", required=True, help="YAML file: `defaults` and a list `experiments`")
    s.add_argument("--index", required=True, type=int, help="which experiment, 0-based (JOB_COMPLETION_INDEX)")
    s.add_argument("--runs-dir", required=True, dest="runs_dir", help="each experiment writes RUNS_DIR/<name>")
    s.add_argument("--data-root", required=True, dest="data_root", help="datasets live in DATA_ROOT/<dataset>")
    s.add_argument("--cache-dir", dest="cache_dir")
    s.add_argument("--threads", type=int)
    return p


def run(args: argparse.Namespace) -> int:
    if args.runs_cmd == "compare":
        return compare(args.runs_dir, args.out)
    return sweep_item(args.experiments, args.index, args.runs_dir, args.data_root, args.cache_dir, args.threads)


COMMAND = Command("runs", add_parser, run)
