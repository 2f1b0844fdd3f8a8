"""Requests the registry answers, the heartbeat batches it receives, and its replies.

Heartbeats are not requests: gateways collect them from node connections and publish one batch
every few hundred milliseconds on :data:`HEARTBEATS` (core NATS, at most once: liveness is
soft state, the next heartbeat repairs a lost one). Every registry replica receives every batch,
so a standby has warm liveness when it takes over.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from fog_shared.commands.auth import NodeId, Principal
from fog_shared.commands.common import ErrorReply, JobNetwork, Strict, Text, Timestamp, error
from fog_shared.subjects import command_subject, query_subject

__all__ = ["ErrorReply", "error"]

REGISTER_NODE = command_subject("registry", "register_node")
GET_NODE = query_subject("registry", "get_node")
LIST_NODES = query_subject("registry", "list_nodes")
DRAIN_NODE = command_subject("registry", "drain_node")
RESUME_NODE = command_subject("registry", "resume_node")
LABEL_NODE = command_subject("registry", "label_node")
DECLARE_CAPABILITIES = command_subject("registry", "declare_capabilities")
DEREGISTER_NODE = command_subject("registry", "deregister_node")
HEARTBEATS = command_subject("registry", "heartbeats")

NodeStatus = Literal["ready", "suspect", "down", "draining", "deregistered"]
LabelKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._/-]{0,62}$")]
LabelValue = Annotated[Text, StringConstraints(max_length=128)]
#: the most labels a node has
MAX_LABELS = 32
Region = Annotated[str, StringConstraints(pattern=r"^[a-z0-9-]{1,64}$")]
NonNegative = Annotated[int, Field(ge=0, le=2**62)]


class Gpu(Strict):
    model: Text = Field(min_length=1, max_length=128)
    memory_bytes: NonNegative | None = None


class Capabilities(Strict):
    cpu_cores: int = Field(ge=1, le=4096)
    memory_bytes: int = Field(ge=1, le=2**62)
    #: the disk its jobs may fill, for placing jobs that state theirs (``Resources.disk_bytes``): an agent declares
    #: what was free where jobs write when it joined, less its reserve (docs/jobs.md, "Disk")
    disk_bytes: NonNegative
    arch: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    os: Text = Field(min_length=1, max_length=64)
    gpus: list[Gpu] = Field(default=[], max_length=16)
    #: the networks the node gives its jobs (``JobNetwork``); a node registered before jobs could ask gives its own
    networks: list[JobNetwork] = Field(default=["host"], min_length=1, max_length=2)

    @field_validator("networks")
    @classmethod
    def _each_once(cls, networks: list[str]) -> list[str]:
        if len(set(networks)) != len(networks):
            raise ValueError("each network at most once")
        return networks


class Location(Strict):
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class NodeRegistration(Strict):
    """What a provider offers: the public ``POST /v1/nodes`` body."""

    name: Text = Field(min_length=1, max_length=64)
    capabilities: Capabilities
    labels: dict[LabelKey, LabelValue] = Field(default={}, max_length=MAX_LABELS)
    region: Region | None = None
    location: Location | None = None


class RegisterNodeCommand(Strict):
    owner_id: str
    registration: NodeRegistration


class Usage(Strict):
    cpu_percent: float = Field(ge=0, le=100_000)
    memory_used_bytes: NonNegative
    disk_used_bytes: NonNegative


#: characters of an agent's name and version kept (a ``User-Agent`` may be longer)
AGENT_MAX = 100


class Heartbeat(Strict):
    """One beat of one node, as its agent sends it (``type`` is the WebSocket message type)."""

    type: Literal["heartbeat"] = "heartbeat"
    node_id: NodeId
    seq: int = Field(ge=0, le=2**62)
    running_jobs: int = Field(ge=0, le=100_000)
    usage: Usage
    #: the agent's software and version (``fog-agent/0.4.0``): the gateway sets it from the WebSocket's
    #: ``User-Agent``, whatever the agent put here
    agent: str | None = Field(default=None, max_length=AGENT_MAX)


#: beats (and departures) per batch; a gateway splits larger flushes
MAX_BATCH_ITEMS = 10_000


class HeartbeatBatch(Strict):
    #: the gateway process that relayed it; gateways publish a batch at least every second
    #: (empty when no node spoke), so a quiet source is a stalled or gone gateway
    source: Text | None = Field(default=None, max_length=200)
    heartbeats: list[Heartbeat] = Field(default=[], max_length=MAX_BATCH_ITEMS)
    #: nodes that said goodbye (clean shutdown): down at once, no waiting for the grace period
    departed: list[str] = Field(default=[], max_length=MAX_BATCH_ITEMS)


class Contribution(Strict):
    """What a node gave since it was registered, from the outcomes of the job attempts placed on it."""

    #: attempts that ran to their end there: succeeded, or failed by the job itself (exit code, timeout)
    attempts_succeeded: int = 0
    attempts_failed: int = 0
    #: attempts it lost (it went down, or its sandbox broke), counted when the job ended with them
    attempts_lost: int = 0
    #: wall-clock and CPU time of the attempts that ran there, as its agent measured them
    run_s: float = 0.0
    cpu_s: float = 0.0


class NodeView(Strict):
    id: str
    name: str
    owner_id: str
    status: NodeStatus
    capabilities: Capabilities
    labels: dict[str, str]
    region: str | None
    location: Location | None
    reputation: float
    running_jobs: int
    usage: Usage | None
    last_heartbeat_at: Timestamp | None
    registered_at: Timestamp
    status_changed_at: Timestamp
    #: what its agent said it is at its last beat (``fog-agent/0.4.0``); none before its first
    agent: str | None = None
    contribution: Contribution = Contribution()


class RegisteredNode(Strict):
    node: NodeView
    #: the node credential, shown once: the agent authenticates with it
    credential: str


class NodeList(Strict):
    items: list[NodeView]


class NodeQuery(Strict):
    node_id: NodeId
    #: who asks: owners see their nodes, admins all, anyone else none
    by: Principal


#: a JSON merge patch of labels: a value sets its label, ``None`` removes it, labels not named stay as they are
LabelsPatch = Annotated[dict[LabelKey, LabelValue | None], Field(min_length=1, max_length=MAX_LABELS * 2)]


class NodePatch(Strict):
    """A change to a node (``PATCH /v1/nodes/{id}``, a JSON merge patch)."""

    labels: LabelsPatch


class LabelNodeCommand(Strict):
    node_id: NodeId
    by: Principal
    labels: LabelsPatch


class DeclareCapabilitiesCommand(Strict):
    """A node's agent says what the machine offers now (``PUT /v1/nodes/{id}/capabilities``, by the node itself)."""

    node_id: NodeId
    by: Principal
    capabilities: Capabilities


class ListNodesQuery(Strict):
    by: Principal
    status: NodeStatus | None = None
    labels: dict[LabelKey, LabelValue] = Field(default={}, max_length=MAX_LABELS)
    min_cpu_cores: int | None = Field(default=None, ge=1, le=4096)
    min_memory_bytes: int | None = Field(default=None, ge=1, le=2**62)
    owner_id: str | None = None
    limit: int = Field(default=500, ge=1, le=5000)
