"""`seedlings promote`: make a model the registry's current one when it is not worse than it, or roll back.

The registry and the rule are in docs/registry.md; the comparison in seedlings/promotion.py.
"""

from __future__ import annotations

import argparse
import json
import sys

from seedlings.cli.command import Command
from seedlings.errors import SeedlingsError, UsageError
from seedlings.promotion import DEFAULT_MAX_CLASS_DROP, print_outcome, promote
from seedlings.registry import Registry


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("promote", help="make a model the registry's current one if it is not worse; or roll back",
                       description="Copy an exported model into REGISTRY/<version>/, compare it with the current "
                                   "model on the same labelled photos and switch REGISTRY/current.json when it is "
                                   "not worse overall and no species' F1 drops by more than --max-class-drop. "
                                   "Every switch and refusal is recorded in REGISTRY/promotions.jsonl.")
    p.add_argument("candidate", nargs="?", metavar="CANDIDATE", help="exported model folder (`seedlings export`)")
    p.add_argument("--registry", required=True, help="the registry folder (created by the first promotion)")
    p.add_argument("--test", action="append", default=[], metavar="DATA",
                   help="labelled folder, one sub-folder per species (repeat it: the fixed test photos, feedback "
                        "photos held out from training)")
    p.add_argument("--max-class-drop", type=float, default=DEFAULT_MAX_CLASS_DROP, dest="max_class_drop",
                   help=f"largest drop of any species' F1 that is accepted (default: {DEFAULT_MAX_CLASS_DROP})")
    p.add_argument("--force", action="store_true", help="switch even when the rule refuses (recorded; needs --reason)")
    p.add_argument("--reason", help="a note kept with the record in promotions.jsonl (required with --force)")
    p.add_argument("--as-version", dest="as_version",
                   help="store the candidate under this version (its model.json in the registry says so too)")
    p.add_argument("--rollback", action="store_true",
                   help="make the previous current model current again (no CANDIDATE, no --test)")
    p.add_argument("--json", action="store_true", help="print the outcome and its figures as JSON")
    return p


def check_args(args: argparse.Namespace) -> None:
    if args.rollback:
        extra = [f for f, given in (("CANDIDATE", args.candidate), ("--test", args.test), ("--force", args.force),
                                    ("--as-version", args.as_version)) if given]
        if extra:
            raise UsageError(f"--rollback takes only --registry (and --reason, --json), not {', '.join(extra)}")
        return
    if not args.candidate:
        raise UsageError("give the CANDIDATE model folder to promote (or --rollback)")
    if not args.test:
        raise UsageError("give --test DATA: labelled photos to compare the candidate with the current model on")
    if args.force and not (args.reason or "").strip():
        raise UsageError("--force needs --reason TEXT: why the rule is overridden (kept in promotions.jsonl)")
    if not 0 <= args.max_class_drop <= 1:
        raise UsageError(f"--max-class-drop {args.max_class_drop}: an F1 difference, between 0 and 1")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    registry = Registry(args.registry)
    if args.rollback:
        pointer = registry.rollback(args.reason)
        if args.json:
            print(json.dumps({"decision": "rollback", "current": pointer.version, "previous": pointer.previous}))
        else:
            print(f"rolled back: {pointer.version} is current again (the previous one is now "
                  f"{pointer.previous or 'none'})")
        return 0
    outcome = promote(registry, args.candidate, args.test, args.max_class_drop, args.force, args.reason,
                      args.as_version, progress=not args.json and sys.stderr.isatty())
    if args.json:
        print(json.dumps(outcome.to_dict(), indent=2, ensure_ascii=False))
    else:
        print_outcome(outcome)
    if not outcome.switched and outcome.decision == "refused":
        raise SeedlingsError(f"refused {outcome.version}: " + "; ".join(outcome.failures)
                             + f". {outcome.current} stays current (recorded in {args.registry}/promotions.jsonl); "
                               "to switch anyway: --force --reason TEXT")
    return 0


COMMAND = Command("promote", add_parser, run, extra="serve")
