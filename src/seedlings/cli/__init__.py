"""The `seedlings` command (also `python -m seedlings`): thin subcommands over the package.

Each subcommand is one module here with one ``COMMAND`` (a :class:`Command`); registering a command
is adding its name to ``NAMES``. The commands import torch-based parts only when they run, so
``seedlings --help`` and ``seedlings serve`` work in a serve-only install, and a command whose
extra is missing answers with the one ``pip install`` line (``run_command``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from seedlings import __version__
from seedlings.cli.command import Command
from seedlings.errors import SeedlingsError, extra_for, missing_extra

# The commands in `seedlings --help` order; each is the module seedlings.cli.<name> with a COMMAND. A command's
# module is imported only when it is needed: `seedlings serve` (a container's cold start) does not pay for
# importing the data, training and registry commands (~0.25 s of a 2 s cold start on 2 cores).
NAMES = ("data", "models", "train", "evaluate", "predict", "results", "export", "serve", "runs", "feedback",
         "promote")


def command(name: str) -> Command:
    return importlib.import_module(f"seedlings.cli.{name}").COMMAND


def __getattr__(attr: str):
    """``COMMANDS`` (every command, by name) is built on first use: it imports every command's module."""
    if attr == "COMMANDS":
        return {name: command(name) for name in NAMES}
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given ``argv`` whose command is known, with only that command (the others not imported)."""
    parser = argparse.ArgumentParser(prog="seedlings", description="Identify plant seedlings from photos.")
    parser.add_argument("--version", action="version", version=f"seedlings {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    first = next((a for a in argv or () if not a.startswith("-")), None)
    for name in (first,) if first in NAMES else NAMES:
        command(name).add_parser(sub)
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
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return run_command(command(args.command), args)
    except SeedlingsError as exc:
        print(f"seedlings {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"seedlings {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `seedlings … | head`: the reader has gone; like other tools, stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
