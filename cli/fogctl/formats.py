"""How fogctl's commands show things: the ``--json`` flag, moments, sizes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output")]
_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


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
