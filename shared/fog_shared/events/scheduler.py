"""Events published by the scheduler service (stream ``EVT_SCHEDULER``).

The job outcome events are declared ahead of the scheduler itself: the registry consumes them to
move node reputation, so their contract is fixed here first.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from fog_shared.events.base import Event, EventType


class JobCompleted(Event):
    """A job ran to completion on a node."""

    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "completed", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    node_id: str
    exit_code: int
    completed_at: datetime


class JobFailed(Event):
    """A job failed. ``node_fault`` says whether the node is to blame (lost, timed out while
    heartbeating, crashed its sandbox) rather than the job itself (non-zero exit, bad input)."""

    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "failed", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    node_id: str | None
    reason: str
    node_fault: bool
    failed_at: datetime
