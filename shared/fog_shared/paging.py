"""Keyset paging cursors: where a page ended, as ``(moment, id)`` of its last row, opaque to callers.

A page goes on from its cursor, not from an offset, so rows written meanwhile neither repeat nor slip
out of the pages that follow.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime


class InvalidCursor(ValueError):
    """Not a cursor this API gave out."""


def encode_cursor(at: datetime, row_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        at, _, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(at), uuid.UUID(row_id)
    except (ValueError, binascii.Error):  # UnicodeDecodeError is a ValueError
        raise InvalidCursor("the cursor is not one this API gave out") from None
