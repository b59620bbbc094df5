"""Tables: rich boxes on a terminal; plain, aligned, never cut rows anywhere else (a pipe, a file).

``seedlings models | grep efficientnet_lite0`` must find its row: rich fits a table to 80 columns when
the output is not a terminal and wraps names inside their cells. Like ``ls`` and ``kubectl get``, output
that is not a terminal gets one line per row, columns separated by at least two spaces, the title first.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table


def print_table(title: str, header: list[str], rows: list[list], file=None) -> None:
    out = file or sys.stdout
    cells = [[str(c) for c in r] for r in rows]
    if not is_terminal(out):
        print_plain(title, header, cells, out)
        return
    table = Table(title=title)
    for h in header:
        table.add_column(h, overflow="fold")
    for r in cells:
        table.add_row(*r)
    Console(file=out, width=max(100, Console().width)).print(table)


def print_plain(title: str, header: list[str], rows: list[list[str]], out) -> None:
    """``title``, then the header and each row on one line, columns padded to their widest cell."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    print(title, file=out)
    for line in (header, *rows):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip(), file=out)


def is_terminal(out) -> bool:
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False
