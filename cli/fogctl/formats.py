"""How fogctl's commands show things: the ``--json`` flag, moments, sizes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
#: as wide as any table may grow when the terminal is narrower than it
_WIDEST = 10_000


def when(moment: datetime | None, missing: str = "-") -> str:
    """A moment in UTC, to the second; ``missing`` for none."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if moment else missing


def human_bytes(count: int | None) -> str:
    """Binary units, as memory is sold: 16.0 GiB, not 17.2 GB."""
    if count is None:
        return "?"
    if count < 1024:
        return f"{count} B"
    size = float(count)
    for unit in _UNITS:
        size /= 1024
        if size < 1024 or unit == _UNITS[-1]:
            return f"{size:.1f} {unit}"
    raise AssertionError("the last unit always returns")


def print_table(table: Table) -> None:
    """A table in full. Where the terminal (or a pipe, 80 columns to Rich) is too narrow for it, it is printed
    without its frame at its own width and the lines run on: cutting a cell short would cut the ids people
    copy into their next command."""
    console = Console(highlight=False)
    unbounded = console.options.update(max_width=_WIDEST)
    if Measurement.get(console, unbounded, table).maximum > console.width:
        table.box, table.show_edge = None, False
        console = Console(highlight=False, width=Measurement.get(console, unbounded, table).maximum)
    console.print(table)
