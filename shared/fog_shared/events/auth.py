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


class SessionRevoked(Event):
    """A login session ended: logout, refresh-token reuse, password change or an admin.

    Verifiers refuse access tokens carrying this session id (``sid``) from then on.
    """

    TYPE: ClassVar[EventType] = EventType("auth", "session", "revoked", 1)
    AGGREGATE_ID: ClassVar[str] = "session_id"

    session_id: str
    user_id: str
    reason: str
    revoked_at: datetime


class SigningKeyRotated(Event):
    """A new key signs from now on; verifiers refresh their JWKS."""

    TYPE: ClassVar[EventType] = EventType("auth", "signing_key", "rotated", 1)
    AGGREGATE_ID: ClassVar[str] = "kid"

    kid: str
    previous_kid: str | None
    rotated_at: datetime
