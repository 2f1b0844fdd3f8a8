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


class Gpu(_Reply):
    model: str
    memory_bytes: int | None = None


class Capabilities(_Reply):
    """What a node offers; the agent measures it when joining and sends it with ``register_node``."""

    cpu_cores: int
    memory_bytes: int
    disk_bytes: int
    arch: str
    os: str
    gpus: list[Gpu] = Field(default_factory=list)


class Location(_Reply):
    lat: float
    lon: float


class NodeUsage(_Reply):
    """What a node is using, as of its last heartbeat."""

    cpu_percent: float
    memory_used_bytes: int
    disk_used_bytes: int


class Node(_Reply):
    """A node as the registry sees it.

    ``status`` is ``ready``, ``suspect``, ``down``, ``draining`` or ``deregistered``; it is a plain
    string so that a status added by a newer gateway does not make the whole reply unreadable.
    """

    id: str
    name: str
    owner_id: str
    status: str
    capabilities: Capabilities
    labels: dict[str, str] = Field(default_factory=dict)
    region: str | None = None
    location: Location | None = None
    reputation: float
    running_jobs: int = 0
    usage: NodeUsage | None = None
    last_heartbeat_at: datetime | None = None
    registered_at: datetime
    status_changed_at: datetime


class RegisteredNode(_Reply):
    """A new node and its credential (``fogn_…``), shown this once: the agent keeps it in its state file."""

    node: Node
    credential: str = Field(repr=False)


class Items(_Reply, Generic[T]):
    """The envelope of every list reply, so that paging can be added without changing its shape."""

    items: list[T]
