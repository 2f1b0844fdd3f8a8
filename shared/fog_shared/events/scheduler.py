"""Events published by the scheduler service (stream ``EVT_SCHEDULER``).

The job outcome events are declared ahead of the scheduler itself: the registry consumes them to
move node reputation, so their contract is fixed here first.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from fog_shared.events.base import Event, EventType


class JobCompleted(Event):
    """A job ran to completion on a node."""

    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "completed", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    node_id: str
    exit_code: int
    completed_at: datetime
    owner_id: str | None = None
    #: how long the attempt ran and the CPU time it used, as its agent measured them (None: not said)
    duration_s: float | None = None
    cpu_s: float | None = None


class JobFailed(Event):
    """An attempt of a job failed. ``node_fault`` says whether the node is to blame (lost, timed out
    while heartbeating, crashed its sandbox) rather than the job itself (non-zero exit, bad input).
    ``reason`` says what happened in words (``attempt 1 of 3 failed: exit code 3; tried again in 1 s``);
    ``retried`` whether the job goes back to pending for another attempt or has ended.

    ``attempt``, ``exit_code``, ``retried``, ``duration_s`` and ``cpu_s`` are absent (None) from events recorded
    before they were carried.
    """

    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "failed", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    node_id: str | None
    reason: str
    node_fault: bool
    failed_at: datetime
    owner_id: str | None = None
    attempt: int | None = None
    exit_code: int | None = None
    retried: bool | None = None
    #: of an attempt its node ran to an end: how long it ran and the CPU time it used (None: not said, or lost)
    duration_s: float | None = None
    cpu_s: float | None = None


class JobSubmitted(Event):
    """A job was accepted (one event per job, arrays included)."""

    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "submitted", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    owner_id: str
    array_id: str | None
    priority: int
    submitted_at: datetime
    #: the jobs and arrays it is to run after: to succeed (its spec's ``after``), to end (``after_any``); it waits,
    #: unplaced, until then (absent from older schedulers' events)
    after: list[str] = Field(default=[])
    after_any: list[str] = Field(default=[])


class JobAssigned(Event):
    """The scheduler placed an attempt of a job on a node; the node's gateway hands it to the
    agent. It carries what to run, so gateways need not ask: job environments are not a channel
    for secrets (events are kept for days)."""

    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "assigned", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    owner_id: str
    node_id: str
    attempt: int
    assignment: dict[str, Any]
    assigned_at: datetime


class JobStarted(Event):
    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "started", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    owner_id: str
    node_id: str
    attempt: int
    started_at: datetime


class JobCancelled(Event):
    """The job was cancelled: by its owner, or because a job it was to run after did not succeed. If it was
    placed, its node is told to kill it."""

    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "cancelled", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    owner_id: str
    node_id: str | None
    attempt: int
    cancelled_at: datetime
    #: why, when not its owner's asking (absent from older schedulers' events)
    reason: str | None = None


class JobLost(Event):
    """The job's node went down while it was placed there; it goes back to pending while
    attempts remain."""

    TYPE: ClassVar[EventType] = EventType("scheduler", "job", "lost", 1)
    AGGREGATE_ID: ClassVar[str] = "job_id"

    job_id: str
    owner_id: str
    node_id: str
    attempt: int
    lost_at: datetime
