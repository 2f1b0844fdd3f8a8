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


class UserRolesChanged(Event):
    """An admin changed a user's roles. The user's sessions are revoked with it (their tokens
    carry the old roles), and API keys never act beyond the owner's current roles."""

    TYPE: ClassVar[EventType] = EventType("auth", "user", "roles_changed", 1)
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str
    roles: list[str]
    previous_roles: list[str]
    changed_by: str
    changed_at: datetime


class UserDisabled(Event):
    """An admin disabled an account: no login, no refresh, and its sessions, API keys and node
    credentials stop working at once."""

    TYPE: ClassVar[EventType] = EventType("auth", "user", "disabled", 1)
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str
    disabled_by: str
    disabled_at: datetime


class ApiKeyRevoked(Event):
    """An API key stops working; verifiers drop it from their caches."""

    TYPE: ClassVar[EventType] = EventType("auth", "api_key", "revoked", 1)
    AGGREGATE_ID: ClassVar[str] = "api_key_id"

    api_key_id: str
    user_id: str
    revoked_at: datetime


class NodeCredentialIssued(Event):
    """A node has a (new) credential; any earlier one of the same node is revoked with it."""

    TYPE: ClassVar[EventType] = EventType("auth", "node_credential", "issued", 1)
    AGGREGATE_ID: ClassVar[str] = "node_id"

    node_id: str
    owner_id: str
    credential_id: str
    issued_at: datetime


class NodeCredentialRevoked(Event):
    """A node credential stops working; verifiers drop it from their caches."""

    TYPE: ClassVar[EventType] = EventType("auth", "node_credential", "revoked", 1)
    AGGREGATE_ID: ClassVar[str] = "node_id"

    node_id: str
    owner_id: str
    credential_id: str
    reason: str
    revoked_at: datetime


class UserEnabled(Event):
    """An admin enabled a disabled account again: it may log in; its API keys and node credentials that
    were not revoked work again (its sessions stay ended: it logs in anew)."""

    TYPE: ClassVar[EventType] = EventType("auth", "user", "enabled", 1)
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str
    enabled_by: str
    enabled_at: datetime


class UserPasswordChanged(Event):
    """An account has a new password: changed by its user (``how`` = "changed", every other session of
    theirs ended) or set with a reset token an admin issued (``how`` = "reset", every session ended).
    Never the password or its hash."""

    TYPE: ClassVar[EventType] = EventType("auth", "user", "password_changed", 1)
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str
    how: str
    sessions_ended: int
    changed_at: datetime


class PasswordResetIssued(Event):
    """An admin issued a one-time password reset token for an account (the token itself is shown to the
    admin once and kept only as a hash); any earlier unused one of that account stops working."""

    TYPE: ClassVar[EventType] = EventType("auth", "password_reset", "issued", 1)
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str
    issued_by: str
    issued_at: datetime
    expires_at: datetime


class UserLockedOut(Event):
    """Too many wrong passwords in a row (at login, or as the current password of a change): the account
    refuses logins until ``locked_until``, the right password too. Each further failure after the lock
    doubles it. ``source`` is the address the failure came from, as the gateway saw it."""

    TYPE: ClassVar[EventType] = EventType("auth", "user", "locked_out", 1)
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str
    failures: int
    locked_until: datetime
    source: str


class UserUnlocked(Event):
    """An admin ended an account's lockout (its count of wrong passwords starts again from nothing)."""

    TYPE: ClassVar[EventType] = EventType("auth", "user", "unlocked", 1)
    AGGREGATE_ID: ClassVar[str] = "user_id"

    user_id: str
    unlocked_by: str
    unlocked_at: datetime
