"""Events published by the auth service (stream ``EVT_AUTH``)."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from fog_shared.events.base import Event, EventType


class UserRegistered(Event):
    """A new account exists. Other services learn of users only through this."""

    TYPE: ClassVar[EventType] = EventType("auth", "user", "registered", 1)
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str
    email: str
    roles: list[str]
    registered_at: datetime
