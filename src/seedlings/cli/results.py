"""`seedlings results DIR`: the predictions a `seedlings predict --out DIR` run wrote (every shard), printed
as a table, JSON or CSV, or as a Kaggle submission."""

from __future__ import annotations

import argparse
import sys

from seedlings import batch
from seedlings.cli.command import Command
from seedlings.cli.predict import finish_rows, result_rows


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("results", help="print or convert the results of `seedlings predict --out DIR`")
    p.add_argument("out", metavar="DIR", help="the --out folder of seedlings predict (all its shards are read)")
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    p.add_argument("--kaggle-csv", dest="kaggle_csv", help="also write a Kaggle submission (file,species)")
    return p


def run(args: argparse.Namespace) -> int:
    rows, errors = batch.read_results(args.out)
    unfinished = [m["shard"] for m in batch.manifests(args.out) if not m.get("finished")]
    if unfinished:
        print(f"seedlings results: shard(s) {', '.join(unfinished)} not finished yet: rerun their "
              "`seedlings predict --out` to complete them", file=sys.stderr)
    finish_rows(result_rows(rows, errors), args)
    return 1 if unfinished else 0


COMMAND = Command("results", add_parser, run, extra="batch")
