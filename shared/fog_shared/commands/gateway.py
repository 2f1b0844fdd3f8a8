"""What the gateway hears from other services outside requests and events.

:data:`ASSIGNMENTS` is the fast path of new assignments to nodes. Right after a placement
commits, the scheduler publishes that batch's assignments here: core NATS, at most once, and
no queue group. Every gateway hears every batch, and the one holding a node's connection passes
the node's assignments on. This saves a new job the wait for the outbox relay and the
JetStream store, and nothing else depends on it.

The ``job.assigned`` event stays the durable record, and gateways deliver it too. A gateway
skips the copy it has already pushed, and agents ignore an assignment they already have. So a
push that is lost, or never sent, delays a job and never loses one.
"""

from __future__ import annotations

from pydantic import Field

from fog_shared.commands.auth import NodeId
from fog_shared.commands.common import Strict
from fog_shared.commands.scheduler import Assignment
from fog_shared.subjects import command_subject

ASSIGNMENTS = command_subject("gateway", "assignments")
#: serialised assignments per push at most: NATS takes up to 8 MiB, and one assignment may be 1 MiB
PUSH_BUDGET_BYTES = 4 << 20
#: assignments per push at most (a placement batch may be larger: it is pushed in parts)
PUSH_MAX_ASSIGNMENTS = 10_000


class NodeAssignment(Strict):
    node_id: NodeId
    assignment: Assignment


class AssignmentPush(Strict):
    assignments: list[NodeAssignment] = Field(min_length=1, max_length=PUSH_MAX_ASSIGNMENTS)
