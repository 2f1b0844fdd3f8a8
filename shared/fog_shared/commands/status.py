"""Every service process's ``status`` query (``fog.qry.<svc>.status.v1``), answered by each replica.

Every replica of a service subscribes to its status query outside the service's queue group, so one request
gathers the answers of all of them: the gateway's ``GET /v1/admin/status`` (``fogctl status``) asks each
service this way and waits a moment for whoever answers.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field

#: a replica's checks are ``ok`` or say what is wrong (``disconnected``, ``ended: placement``)
OK = "ok"


class ReplicaStatus(BaseModel):
    """One process of a service, as it sees itself."""

    service: str
    #: host and process id: which pod or process answered
    replica: str
    #: each dependency and the background tasks: ``ok``, or what is wrong (as ``/readyz``)
    checks: dict[str, str]
    #: what this replica does that the others may not (``leads_placement``: true), service by service
    facts: dict[str, bool | int | str] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(value == OK for value in self.checks.values())


class ServiceStatus(BaseModel):
    service: str
    #: every replica that answered within the gateway's wait; none: the service is down, or NATS is
    replicas: list[ReplicaStatus]

    @property
    def ok(self) -> bool:
        return bool(self.replicas) and all(replica.ok for replica in self.replicas)


class PlatformStatus(BaseModel):
    """Every service, with each replica that answered (the gateway's own view of itself included)."""

    ok: Annotated[bool, Field(description="every service has at least one replica, and every check of each is ok")]
    services: list[ServiceStatus]
