"""`seedlings serve`: the web service. Its flags and handler live in seedlings/serving/cli.py."""

from __future__ import annotations

import argparse

from seedlings.cli.command import Command
from seedlings.serving.cli import add_serve_command, cmd_serve


def add_parser(sub) -> argparse.ArgumentParser:
    handlers: dict = {}  # add_serve_command also registers its handler; here COMMANDS does that
    add_serve_command(sub, handlers)
    return sub.choices["serve"]


COMMAND = Command("serve", add_parser, cmd_serve, extra="serve")
