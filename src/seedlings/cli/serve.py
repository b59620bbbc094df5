"""`seedlings serve`: the web service. Its flags and handler live in seedlings/serving/cli.py."""

from __future__ import annotations

from seedlings.cli.command import Command
from seedlings.serving.cli import add_parser, cmd_serve

COMMAND = Command("serve", add_parser, cmd_serve, extra="serve")
