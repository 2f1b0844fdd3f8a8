"""How fogctl's commands show things: the ``--json`` flag, moments, sizes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")
#: as wide as any table may grow when the terminal is narrower than it
_WIDEST = 10_000
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


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


def parse_duration(text: str, option: str, *, bare_seconds: bool = False) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``, ``45s``, ``1.5h``: a number and its unit (with ``bare_seconds``, a number
    alone is seconds: ``90``, ``2.5``); more than nothing."""
    match = _DURATION.match(text)
    if match is None or float(match.group(1)) == 0 or (not match.group(2) and not bare_seconds):
        example = "90, 45s, 10m or 2h" if bare_seconds else "90d, 12h or 2w"
        raise typer.BadParameter(f"{text!r} is not a duration such as {example}", param_hint=option)
    return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2)])
