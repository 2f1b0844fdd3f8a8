"""What the gateway answers. Lenient on purpose: a newer gateway may add fields without breaking older clients.

Secrets (tokens, API keys, node credentials) are plain strings, kept out of ``repr`` so that a logged
model does not leak them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class _Reply(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Tokens(_Reply):
    """A session's tokens, from login and refresh; ``expires_in`` is the access token's lifetime in seconds."""

    access_token: str = Field(repr=False)
    refresh_token: str = Field(repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a scheme, not a secret
    expires_in: int


class Registered(_Reply):
    user_id: str


class Me(_Reply):
    """Who the presented credential is: a user's session, an API key or a node."""

    kind: Literal["user", "api_key", "node"]
    user_id: str | None = None
    node_id: str | None = None
    roles: list[str] = Field(default_factory=list)
    session_id: str | None = None
    api_key_id: str | None = None


class ApiKey(_Reply):
    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


class CreatedApiKey(_Reply):
    """A new API key; ``key`` is the secret (``fogk_…``), shown this once and never again."""

    id: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None = None
    key: str = Field(repr=False)


class User(_Reply):
    id: str
    email: str
    roles: list[str]
    disabled: bool
    created_at: datetime


class RotatedKey(_Reply):
    kid: str


class NodeCredential(_Reply):
    """A node's credential (``fogn_…``), shown this once; issuing a new one replaces the old."""

    node_id: str
    credential: str = Field(repr=False)
    issued_at: datetime


class Items(_Reply, Generic[T]):
    """The envelope of every list reply, so that paging can be added without changing its shape."""

    items: list[T]
