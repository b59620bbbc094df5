"""The `seedlings` command (also `python -m seedlings`): thin subcommands over the package.

Each subcommand is one module here with one ``COMMAND`` (a :class:`Command`); registering a command
is adding it to ``COMMANDS``. The commands import torch-based parts only when they run, so
``seedlings --help`` and ``seedlings serve`` work in a serve-only install, and a command whose
extra is missing answers with the one ``pip install`` line (``run_command``).
"""

from __future__ import annotations

import argparse
import os
import sys

from seedlings import __version__
from seedlings.cli import data, evaluate, export, feedback, models, predict, promote, results, runs, serve, train
from seedlings.cli.command import Command
from seedlings.errors import SeedlingsError, extra_for, missing_extra

COMMANDS: dict[str, Command] = {c.name: c for c in (data.COMMAND, models.COMMAND, train.COMMAND, evaluate.COMMAND,
                                                    predict.COMMAND, results.COMMAND, export.COMMAND, serve.COMMAND,
                                                    runs.COMMAND, feedback.COMMAND, promote.COMMAND)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seedlings", description="Identify plant seedlings from photos.")
    parser.add_argument("--version", action="version", version=f"seedlings {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def run_command(command: Command, args: argparse.Namespace) -> int:
    """Run ``command``; a module of a missing extra becomes the error that names its pip line."""
    try:
        return command.run(args)
    except ModuleNotFoundError as exc:
        extra = extra_for(exc.name, command.extra)
        if extra is None:
            raise
        raise missing_extra(extra, exc.name) from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run_command(COMMANDS[args.command], args)
    except SeedlingsError as exc:
        print(f"seedlings {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"seedlings {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `seedlings … | head`: the reader has gone; like other tools, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
