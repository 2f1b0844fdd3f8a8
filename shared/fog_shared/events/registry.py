"""Events published by the registry service (stream ``EVT_REGISTRY``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from fog_shared.events.base import Event, EventType


class NodeRegistered(Event):
    """A provider offered a machine. Capabilities as registered (see ``fog_shared.commands.registry``)."""

    TYPE: ClassVar[EventType] = EventType("registry", "node", "registered", 1)
    AGGREGATE_ID: ClassVar[str] = "node_id"

    node_id: str
    owner_id: str
    name: str
    capabilities: dict[str, Any]
    labels: dict[str, str]
    region: str | None
    registered_at: datetime


class NodeStatusChanged(Event):
    """A node's announced status changed: once per real transition, damped when it flaps.

    Statuses: ``ready`` (heartbeating, takes work), ``suspect`` (missed a heartbeat), ``down``
    (silent past the grace period, or left), ``draining`` (alive, takes no new work).
    """

    TYPE: ClassVar[EventType] = EventType("registry", "node", "status_changed", 1)
    AGGREGATE_ID: ClassVar[str] = "node_id"

    node_id: str
    status: str
    previous_status: str
    reason: str
    changed_at: datetime


class NodeLabelsChanged(Event):
    """The node's owner (or an admin) changed its labels: ``labels`` is the whole new set."""

    TYPE: ClassVar[EventType] = EventType("registry", "node", "labels_changed", 1)
    AGGREGATE_ID: ClassVar[str] = "node_id"

    node_id: str
    labels: dict[str, str]
    previous_labels: dict[str, str]
    changed_at: datetime


class NodeCapabilitiesChanged(Event):
    """The node's agent declared what the machine offers anew (at its start), and it differs from what was
    declared before: ``capabilities`` is the whole new set (``fog_shared.commands.registry.Capabilities``)."""

    TYPE: ClassVar[EventType] = EventType("registry", "node", "capabilities_changed", 1)
    AGGREGATE_ID: ClassVar[str] = "node_id"

    node_id: str
    capabilities: dict[str, Any]
    previous_capabilities: dict[str, Any]
    changed_at: datetime


class NodeDeregistered(Event):
    """The node is gone for good; its credential is revoked by the gateway's request."""

    TYPE: ClassVar[EventType] = EventType("registry", "node", "deregistered", 1)
    AGGREGATE_ID: ClassVar[str] = "node_id"

    node_id: str
    owner_id: str
    deregistered_at: datetime


class NodeReputationChanged(Event):
    """The node's reliability score (0..1) moved noticeably: job outcomes, stability, decay."""

    TYPE: ClassVar[EventType] = EventType("registry", "node", "reputation_changed", 1)
    AGGREGATE_ID: ClassVar[str] = "node_id"

    node_id: str
    reputation: float
    previous_reputation: float
    reason: str
    changed_at: datetime
