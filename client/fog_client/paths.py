"""Ids in URL paths."""

from __future__ import annotations

from urllib.parse import quote


def segment(value: str) -> str:
    """An id as one path segment: a ``/`` or ``..`` in it must not reach another route."""
    if value in ("", ".", ".."):  # URL normalisation would drop or climb these
        raise ValueError(f"not an id: {value!r}")
    return quote(value, safe="")
