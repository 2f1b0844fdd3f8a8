"""Keyset cursors: what one encodes comes back; anything else is refused, never half-read."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from fog_shared.paging import InvalidCursor, decode_cursor, encode_cursor


def test_a_cursor_gives_back_the_moment_and_id_it_was_made_of() -> None:
    at, row_id = datetime(2026, 12, 7, 11, 56, 59, 602913, tzinfo=UTC), uuid.uuid4()
    assert decode_cursor(encode_cursor(at, row_id)) == (at, row_id)


@pytest.mark.parametrize(
    "cursor",
    ["not-a-cursor", "", "%%%", encode_cursor(datetime(2026, 1, 1, tzinfo=UTC), uuid.uuid4())[:-8], "//79"],
)
def test_anything_else_is_an_invalid_cursor(cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(cursor)
