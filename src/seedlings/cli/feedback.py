"""`seedlings feedback migrate|stats|export`: the corrections the service stored (`serve --feedback-db URL`).

Every subcommand takes ``--db URL`` or reads ``SEEDLINGS_FEEDBACK_DB``, as the service does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone

from seedlings.cli.command import Command
from seedlings.errors import UsageError
from seedlings.tables import print_table

DB_ENV = "SEEDLINGS_FEEDBACK_DB"
DB_HELP = f"database URL (sqlite:///path/feedback.db or postgresql+psycopg://…); default: ${DB_ENV}"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("feedback", help="the corrections sent to the service: migrate, stats, export")
    fsub = p.add_subparsers(dest="feedback_cmd", required=True)
    m = fsub.add_parser("migrate", help="create or upgrade the database's schema (Alembic upgrade head)")
    s = fsub.add_parser("stats", help="counts per label and model version, agreement, most confused pairs")
    s.add_argument("--json", action="store_true", help="print JSON instead of tables")
    e = fsub.add_parser("export", help="write the corrected photos as a training folder (one sub-folder a species)")
    e.add_argument("--out", required=True, help="the folder to write (an earlier export there is replaced)")
    e.add_argument("--since", help="only votes at or after this date or time (ISO 8601, e.g. 2026-11-01)")
    e.add_argument("--min-votes", type=int, default=1, dest="min_votes",
                   help="a photo needs this many votes for its label (default 1)")
    e.add_argument("--holdout", type=float, default=0.0,
                   help="share of photos (stable, by hash) written to OUT/test instead of OUT/train (e.g. 0.2)")
    e.add_argument("--label-studio", action="store_true", dest="label_studio",
                   help="also write label-studio.json (tasks) and label-studio.xml (labeling config)")
    for q in (m, s, e):
        q.add_argument("--db", default=os.environ.get(DB_ENV), help=DB_HELP)
    return p


def run(args: argparse.Namespace) -> int:
    if not args.db:
        raise UsageError(f"no database: pass --db URL or set {DB_ENV} (e.g. sqlite:///feedback.db)")
    from seedlings.feedback.store import Store, safe_url

    if args.feedback_cmd == "migrate":
        before, after = Store(args.db, check=False).migrate()
        print(f"{safe_url(args.db)}: schema {before or '(none)'} → {after}" if before != after
              else f"{safe_url(args.db)}: schema already at {after}")
        return 0
    store = Store(args.db, create=False)
    if args.feedback_cmd == "stats":
        return _stats(store, args.json)
    return _export(store, args)


def _stats(store, as_json: bool) -> int:
    from seedlings.feedback.stats import stats

    found = stats(store)
    if as_json:
        print(json.dumps(found, indent=2, ensure_ascii=False))
        return 0
    rate = "-" if found["agreement"] is None else f"{found['agreement']:.1%}"
    print(f"{found['votes']} vote(s) on {found['images']} photo(s); the model confirmed {found['confirmed']}, "
          f"corrected {found['corrected']} (agreement {rate})")
    print_table("Votes per label", ["label", "votes", "photos"],
                [[r["label"], r["votes"], r["images"]] for r in found["labels"]])
    print_table("Per model version", ["model", "version", "votes", "confirmed", "corrected", "agreement"],
                [[r["model"] or "-", r["version"] or "-", r["votes"], r["confirmed"], r["corrected"],
                  "-" if r["agreement"] is None else f"{r['agreement']:.1%}"] for r in found["models"]])
    print_table("Most confused (the model said → people said)", ["predicted", "label", "votes"],
                [[r["predicted"], r["label"], r["votes"]] for r in found["confused"]])
    return 0


def _export(store, args) -> int:
    from seedlings.feedback.export import export
    from seedlings.progress import bar

    if not 0 <= args.holdout < 1:
        raise UsageError(f"--holdout {args.holdout}: a share from 0 to below 1, e.g. 0.2")
    if args.min_votes < 1:
        raise UsageError(f"--min-votes {args.min_votes}: at least 1")
    since = _parse_since(args.since) if args.since else None
    total = len({v.sha256 for v in store.votes(since)})
    with bar(total, "Exporting photos", enabled=sys.stderr.isatty()) as advance:
        summary = export(store, args.out, since, args.min_votes, args.holdout, args.label_studio, advance)
    print(f"{summary['exported']} photo(s) of {len(summary['species'])} species in {args.out} "
          f"({summary['train']} train, {summary['test']} test); {summary['conflicts']} with conflicting votes "
          f"(conflicts.csv); skipped {summary['skipped'] or 'none'}; new species: "
          f"{', '.join(summary['new_species']) or 'none'}")
    return 0


def _parse_since(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"--since {text!r}: not an ISO 8601 date or time (e.g. 2026-11-01 or "
                         "2026-11-01T08:00:00+00:00)") from exc
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


COMMAND = Command("feedback", add_parser, run, extra="feedback")
