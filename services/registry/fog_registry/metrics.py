"""The registry's Prometheus metrics: the nodes by status, and whether this replica leads liveness.

Only the leading replica runs the nodes' state machine, so the counts are its view; every other replica
shows zeros, and a sum over replicas is the leader's figure. Labels are statuses, never node ids.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Gauge

from fog_registry.domain import DOWN, DRAINING, READY, SUSPECT, NodeLiveness

STATUSES = (READY, SUSPECT, DOWN, DRAINING)
NODES = Gauge(
    "fog_registry_nodes", "Registered nodes by status (the replica leading liveness counts; 0 elsewhere)", ["status"]
)
LEADING = Gauge("fog_registry_leading", "1 on the replica that runs node liveness, 0 on the others")
DEAF = Gauge(
    "fog_registry_deaf",
    "1 while the leading replica hears no gateway at all: no node is suspected meanwhile (docs/nodes.md)",
)


def show_liveness(nodes: Iterable[NodeLiveness], *, leading: bool, deaf: bool) -> None:
    counts = Tally(node.announced for node in nodes) if leading else Tally[str]()
    for status in STATUSES:
        NODES.labels(status).set(counts.get(status, 0))
    LEADING.set(1 if leading else 0)
    DEAF.set(1 if leading and deaf else 0)
