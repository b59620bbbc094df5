"""One subcommand of `seedlings`: how it is registered (see seedlings/cli/__init__.py)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

MODEL_HELP = "model folder (exported) or finished run folder; default: the model shipped in the package"


@dataclass(frozen=True)
class Command:
    """``add_parser`` adds the subcommand's parser to argparse's subparsers; ``run`` does it and returns
    the exit code; ``extra`` is the pip extra it needs, named when one of its modules is missing."""

    name: str
    add_parser: Callable[[argparse._SubParsersAction], argparse.ArgumentParser]
    run: Callable[[argparse.Namespace], int]
    extra: str = "train"
