"""Terminal tables (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_table(title: str, header: list[str], rows: list[list], file=None) -> None:
    table = Table(title=title)
    for h in header:
        table.add_column(h, overflow="fold")
    for r in rows:
        table.add_row(*[str(c) for c in r])
    Console(file=file, width=max(100, Console().width)).print(table)
