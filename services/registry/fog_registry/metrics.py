"""The registry's Prometheus metrics: the nodes by status and by agent, and whether this replica leads liveness.

Only the leading replica runs the nodes' state machine, so the counts are its view; every other replica
shows zeros, and a sum over replicas is the leader's figure. Labels are statuses, never node ids.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Iterable

from prometheus_client import Gauge

from fog_registry.domain import DOWN, DRAINING, READY, SUSPECT, NodeLiveness

STATUSES = (READY, SUSPECT, DOWN, DRAINING)
NODES = Gauge(
    "fog_registry_nodes", "Registered nodes by status (the replica leading liveness counts; 0 elsewhere)", ["status"]
)
NODES_BY_AGENT = Gauge(
    "fog_registry_nodes_by_agent",
    "Nodes not down, by what their agent said it is (fog-agent/<version>; other, unknown): an upgrade's progress",
    ["agent"],
)
LEADING = Gauge("fog_registry_leading", "1 on the replica that runs node liveness, 0 on the others")
DEAF = Gauge(
    "fog_registry_deaf",
    "1 while the leading replica hears no gateway at all: no node is suspected meanwhile (docs/nodes.md)",
)


#: an agent shown by its own name: Fog's agent and a version (anything else any node may send, so it is not a label)
_FOG_AGENT = re.compile(r"fog-agent/[0-9][0-9A-Za-z.+-]{0,31}")


def agent_label(agent: str | None) -> str:
    """``fog-agent/<version>``, ``other`` (another program, or a version string too odd), or ``unknown``."""
    if agent is None:
        return "unknown"
    return agent if _FOG_AGENT.fullmatch(agent) else "other"


def show_liveness(nodes: Iterable[NodeLiveness], *, leading: bool, deaf: bool) -> None:
    counts, agents = Tally[str](), Tally[str]()
    for node in nodes if leading else ():  # one pass: every tick, over every node
        counts[node.announced] += 1
        if node.announced != DOWN:
            agents[agent_label(node.agent)] += 1
    for status in STATUSES:
        NODES.labels(status).set(counts.get(status, 0))
    _show_agents(agents)
    LEADING.set(1 if leading else 0)
    DEAF.set(1 if leading and deaf else 0)


_shown_agents: set[str] = set()


def _show_agents(counts: Tally[str]) -> None:
    """Set each agent's count; an agent no node runs any more is removed, not left at its last count."""
    for gone in _shown_agents - counts.keys():
        NODES_BY_AGENT.remove(gone)
    for agent, count in counts.items():
        NODES_BY_AGENT.labels(agent).set(count)
    _shown_agents.clear()
    _shown_agents.update(counts)
