"""What the gateway answers. Lenient on purpose: a newer gateway may add fields without breaking older clients.

Secrets (tokens, API keys, node credentials) are plain strings, kept out of ``repr`` so that a logged
model does not leak them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

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
    """An account as admins see it (the fields after ``created_at`` are absent from older gateways)."""

    id: str
    email: str
    roles: list[str]
    disabled: bool
    created_at: datetime
    failed_logins: int = 0
    #: logins refused until then (too many wrong passwords); ``FogClient.unlock_user`` ends it
    locked_until: datetime | None = None
    last_login_at: datetime | None = None
    password_changed_at: datetime | None = None


class RotatedKey(_Reply):
    kid: str


class Session(_Reply):
    """One of the user's sessions (a login on some device or shell); ``source`` is the address it logged in
    from, ``current`` marks the one asking."""

    id: str
    source: str | None = None
    created_at: datetime
    last_active_at: datetime
    current: bool = False


class SessionsEnded(_Reply):
    sessions_ended: int


class PasswordReset(_Reply):
    """A one-time password reset token (``fogr_…``) for ``email``'s account, shown this once."""

    user_id: str
    email: str
    token: str = Field(repr=False)
    expires_at: datetime


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
    #: the networks the node gives its jobs: ``host`` (its own), ``none`` (loopback alone; docs/jobs.md)
    networks: list[str] = Field(default_factory=lambda: ["host"])


class Location(_Reply):
    lat: float
    lon: float


class NodeUsage(_Reply):
    """What a node is using, as of its last heartbeat."""

    cpu_percent: float
    memory_used_bytes: int
    disk_used_bytes: int


class Contribution(_Reply):
    """What a node gave since it was registered: the job attempts that ended there (succeeded, or failed by the
    job itself), those it lost, and the run and CPU time of those that ran. Zeros from an older gateway."""

    attempts_succeeded: int = 0
    attempts_failed: int = 0
    attempts_lost: int = 0
    run_s: float = 0.0
    cpu_s: float = 0.0


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
    #: what its agent said it is at its last beat (``fog-agent/0.4.0``)
    agent: str | None = None
    contribution: Contribution = Field(default_factory=Contribution)


class RegisteredNode(_Reply):
    """A new node and its credential (``fogn_…``), shown this once: the agent keeps it in its state file."""

    node: Node
    credential: str = Field(repr=False)


class Items(_Reply, Generic[T]):
    """The envelope of every list reply, so that paging can be added without changing its shape."""

    items: list[T]


# -- jobs (docs/jobs.md) -----------------------------------------------------------------------------

MIB = 2**20
#: the statuses a job never leaves; ``lost`` is not one of them (a lost job goes back to ``pending``)
ENDED_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})


class Resources(_Reply):
    """What a job needs from its node; ``cpu_cores`` may be fractional."""

    cpu_cores: float = 1.0
    memory_bytes: int = 256 * MIB
    gpus: int = 0
    #: what it may write beneath its directory; 0: it states none (docs/jobs.md, "Disk")
    disk_bytes: int = 0


class Constraints(_Reply):
    """Hard requirements: a node that misses one is never chosen."""

    labels: dict[str, str] = Field(default_factory=dict)
    region: str | None = None
    arch: str | None = None


class Affinity(_Reply):
    """A soft preference: a node whose label ``label`` is ``value`` scores ``weight`` (1..100) more."""

    label: str
    value: str
    weight: int


class JobSpec(_Reply):
    """What to run and where: the body of ``submit_job``, with the gateway's defaults.

    The limits (argv length, env size, ranges) are checked by the gateway, whose answer is the one that
    counts; repeating them here would only let an older client refuse what a newer gateway accepts.
    """

    command: list[str]
    env: dict[str, str] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)
    constraints: Constraints = Field(default_factory=Constraints)
    affinities: list[Affinity] = Field(default_factory=list)
    #: ``"none"``: no network but loopback, on a node that gives jobs one of their own; ``None`` (left out of the
    #: request) or ``"host"``: the node's own network
    network: str | None = None
    priority: int = 50
    timeout_s: float = 3600.0
    max_attempts: int = 3
    retry_backoff_s: float = 1.0
    name: str | None = None
    idempotency_key: str | None = None
    #: written into the job's directory before it starts: path (relative) -> content in base64
    #: (``base64.b64encode(data).decode()``); 512 KiB in all
    files: dict[str, str] = Field(default_factory=dict)
    #: paths read back from there once it ended: ``FogClient.job_files`` and ``job_file``; 1 MiB in all
    outputs: list[str] = Field(default_factory=list)
    #: ids of jobs, or of whole arrays, that must all succeed before this one is placed; should one of them end
    #: otherwise, this one is cancelled, never run (its ``error`` says which)
    after: list[str] = Field(default_factory=list)
    #: ids of jobs, or of whole arrays, that must all have ended, whatever their outcome, before this one is placed
    after_any: list[str] = Field(default_factory=list)


class Job(_Reply):
    """A submitted job. ``status`` is a plain string (see ``Node``); ``ended`` tells whether it can still change."""

    id: str
    owner_id: str
    name: str | None = None
    array_id: str | None = None
    array_index: int | None = None
    spec: JobSpec
    status: str
    attempt: int = 0
    node_id: str | None = None
    not_before: datetime | None = None
    exit_code: int | None = None
    duration_s: float | None = None
    #: what the last attempt used: CPU time (s), and the largest resident set of one of its processes (bytes)
    cpu_s: float | None = None
    max_rss_bytes: int | None = None
    error: str | None = None
    submitted_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    #: how many of the jobs it is to run after have not succeeded (``spec.after``) or ended (``spec.after_any``) yet
    #: (0 from an older gateway)
    waiting_for: int = 0

    @property
    def ended(self) -> bool:
        return self.status in ENDED_STATUSES


class JobArray(_Reply):
    """``count`` copies of one spec; ``job_ids`` is ``None`` for an array too large to list (over 1000)."""

    array_id: str
    count: int
    job_ids: list[str] | None = None


class ArraySummary(_Reply):
    """How far an array has got: ``statuses`` counts its jobs per status (a status with none is left out)."""

    array_id: str
    count: int
    submitted_at: datetime
    statuses: dict[str, int] = Field(default_factory=dict)
    ended: int = 0

    @property
    def done(self) -> bool:
        """Every job has ended: nothing in the array can change any more."""
        return self.ended >= self.count

    @property
    def all_succeeded(self) -> bool:
        return self.statuses.get("succeeded", 0) == self.count


class JobOutput(_Reply):
    """A job's stdout and stderr interleaved, as its node captured them (capped: see ``truncated``)."""

    output: str
    truncated: bool = False
    exit_code: int | None = None
    #: characters in all: ask from here for what comes next (``FogClient.job_output(offset=...)``)
    length: int = 0
    #: False while the job runs: ``output`` is what its node has sent so far, and more may come
    ended: bool = True
    #: the attempt the output is of; a retry prints anew, from character 0
    attempt: int = 1


class JobFileInfo(_Reply):
    path: str
    #: its size as the job left it; ``truncated``: only its first bytes were kept (the outputs' 1 MiB)
    size: int
    truncated: bool = False
    #: the attempt that left it
    attempt: int = 1


class JobFiles(_Reply):
    """What a job gave back of its ``outputs``; once it ended, ``missing`` names the paths it left nothing at."""

    items: list[JobFileInfo]
    missing: list[str] = Field(default_factory=list)
    ended: bool = False


class Waited(_Reply):
    """A job another job waits for, its status, and what is needed of it: ``success`` (``after``), or to ``end``
    (``after_any``)."""

    job_id: str
    status: str
    needs: str = "success"


class Explanation(_Reply):
    """Why the scheduler placed a job where it did, or why it has not yet.

    ``filtered`` counts the nodes each filter ruled out; ``candidates`` are the nodes that passed, with
    their scores. Their inner shape is the scheduler's to evolve, so they stay plain dicts here.
    """

    job_id: str
    status: str
    decided_at: datetime | None = None
    summary: str | None = None
    filtered: dict[str, int] = Field(default_factory=dict)
    candidates: list[dict[str, Any]] = Field(default_factory=list)
    #: of the jobs it is to run after, the first of those that have not succeeded yet
    waiting_for: list[Waited] = Field(default_factory=list)
    #: how many it waits for in all (0 from a scheduler older than the field)
    waiting_count: int = 0


class JobPage(_Reply):
    """One page of ``list_jobs``; ``next_cursor`` fetches the next one and is ``None`` on the last."""

    items: list[Job]
    next_cursor: str | None = None


class ReplicaStatus(_Reply):
    """One process of a service: its checks (``ok``, or what is wrong) and what it leads (``facts``)."""

    service: str
    replica: str
    checks: dict[str, str]
    facts: dict[str, bool | int | str] = Field(default_factory=dict)


class ServiceStatus(_Reply):
    service: str
    #: every replica that answered; none: the service is down (or cannot reach NATS)
    replicas: list[ReplicaStatus]


class PlatformStatus(_Reply):
    """``GET /v1/admin/status``: ``ok`` when every service has a replica and all their checks are ``ok``."""

    ok: bool
    services: list[ServiceStatus]
