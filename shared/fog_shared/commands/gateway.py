"""What the gateway hears from other services outside requests and events.

:data:`ASSIGNMENTS` is the fast path of new assignments to nodes. Right after a placement
commits, the scheduler publishes that batch's assignments here: core NATS, at most once, and
no queue group. Every gateway hears every batch, and the one holding a node's connection passes
the node's assignments on. This saves a new job the wait for the outbox relay and the
JetStream store, and nothing else depends on it.

The ``job.assigned`` event stays the durable record, and gateways deliver it too. A gateway
skips the copy it has already pushed, and agents ignore an assignment they already have. So a
push that is lost, or never sent, delays a job and never loses one.

:data:`PREPARATIONS` goes one step earlier, for a job placed as it is submitted: once the scheduler
has decided where it goes, and before the insert that records it commits, it tells the node's gateway
(``assignment``), and the node may get the job ready to start (docs/jobs.md, "Preparing a job while its
placement commits"). Nothing runs on a preparation: the job starts on its assignment, which comes only
after the commit. If the insert did not commit, a second preparation without ``assignment`` withdraws it;
one that is lost leaves the node to undo it after a while.

:data:`TIMELINE` is the same fast path for BitChat. Right after a transaction that added
timeline entries commits, the messaging service publishes them here, with the positions they
took: every position after ``after`` up to ``through`` is in the push (a position none may see
has no entry). Positions commit in order, so a gateway that has every push since a position
knows each member's timeline up to the newest one, and its live streams send new entries
without asking messaging for a sync. A push that is lost or late leaves a gap in that chain; the
gateway then falls back to the sync, woken by the changes' events, which the push names so that
the gateway skips the wake-ups it has already served.
"""

from __future__ import annotations

from pydantic import Field

from fog_shared.commands.auth import NodeId
from fog_shared.commands.common import Strict
from fog_shared.commands.messaging import MemberId
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


PREPARATIONS = command_subject("gateway", "preparations")


class Preparation(Strict):
    """A job about to be assigned to ``node_id`` as ``assignment``; without it, withdrawn: it will not be."""

    node_id: NodeId
    job_id: str
    attempt: int = Field(ge=1)
    assignment: Assignment | None = None


TIMELINE = command_subject("gateway", "timeline")
#: serialised entries per push at most, well under the 8 MiB NATS takes (a push is split by
#: position, and a single entry bigger than this still goes alone)
TIMELINE_BUDGET_BYTES = 1 << 20


class PushedEntry(Strict):
    """One committed timeline entry and the members whose timelines hold it."""

    position: int = Field(ge=1)
    audience: list[MemberId]
    #: the entry as ``GET /v1/sync`` returns it (a :class:`~fog_shared.commands.messaging.SyncEntry`),
    #: as JSON text, so a gateway writes it to every stream without serialising it again
    text: str


class TimelinePush(Strict):
    """The entries at positions ``after`` + 1 up to ``through``, in position order."""

    after: int = Field(ge=0)
    through: int = Field(ge=1)
    entries: list[PushedEntry]
    #: the ids of the events these changes recorded, whose wake-ups this push makes needless
    event_ids: list[str] = Field(default_factory=list)
