"""Requests the scheduler answers, and its replies: the job API behind ``/v1/jobs``, and the
agents' reports relayed by the gateway. See docs/jobs.md."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator

from fog_shared.commands.auth import NodeId, Principal
from fog_shared.commands.common import ErrorReply, JobNetwork, Strict, Text, Timestamp, error, without_nul
from fog_shared.commands.registry import LabelKey, LabelValue, Region
from fog_shared.subjects import command_subject, query_subject

__all__ = ["ErrorReply", "error"]

SUBMIT = command_subject("scheduler", "submit")
SUBMIT_ARRAY = command_subject("scheduler", "submit_array")
GET_JOB = query_subject("scheduler", "get_job")
#: many jobs at once (the gateway's live updates, which catch up on an array a batch at a time)
GET_JOBS = query_subject("scheduler", "get_jobs")
LIST_JOBS = query_subject("scheduler", "list_jobs")
CANCEL_JOB = command_subject("scheduler", "cancel_job")
ARRAY_SUMMARY = query_subject("scheduler", "array_summary")
CANCEL_ARRAY = command_subject("scheduler", "cancel_array")
JOB_OUTPUT = query_subject("scheduler", "job_output")
EXPLAIN_JOB = query_subject("scheduler", "explain_job")
NODE_ASSIGNMENTS = query_subject("scheduler", "node_assignments")
REPORTS = command_subject("scheduler", "reports")
#: rebuild the scheduler's event-derived read model (its node view) and compare: replies a RebuildReport
REBUILD = command_subject("scheduler", "rebuild")

JobStatus = Literal["pending", "assigned", "running", "succeeded", "failed", "timed_out", "cancelled", "lost"]
ENDED = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
Outcome = Literal["succeeded", "failed", "timed_out", "cancelled"]
#: the order of a job listing, by when its jobs were submitted
JobOrder = Literal["oldest", "newest"]
EnvName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
Arg = Annotated[Text, StringConstraints(max_length=4096)]
MAX_ENV_BYTES = 32 * 1024
OUTPUT_LIMIT_BYTES = 1 << 20


class Resources(Strict):
    cpu_cores: float = Field(default=1.0, gt=0, le=256)
    memory_bytes: int = Field(default=256 << 20, ge=1 << 20, le=1 << 42)
    gpus: int = Field(default=0, ge=0, le=16)


class Constraints(Strict):
    labels: dict[LabelKey, LabelValue] = Field(default={}, max_length=32)
    region: Region | None = None
    arch: str | None = Field(default=None, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")


class Affinity(Strict):
    label: LabelKey
    value: LabelValue
    weight: int = Field(ge=1, le=100)


class JobSpec(Strict):
    """What a user asks to run: the public ``POST /v1/jobs`` body."""

    command: list[Arg] = Field(min_length=1, max_length=256)
    env: dict[EnvName, Text] = Field(default={}, max_length=64)
    resources: Resources = Resources()
    constraints: Constraints = Constraints()
    affinities: list[Affinity] = Field(default=[], max_length=16)
    #: placed only on a node that gives its jobs this network (``Capabilities.networks``)
    network: JobNetwork = "host"
    priority: int = Field(default=50, ge=0, le=100)
    timeout_s: float = Field(default=3600.0, ge=1, le=86_400)
    max_attempts: int = Field(default=3, ge=1, le=10)
    retry_backoff_s: float = Field(default=1.0, ge=0, le=3600)
    name: Text | None = Field(default=None, max_length=128)
    idempotency_key: Text | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("command")
    @classmethod
    def _program_named(cls, command: list[str]) -> list[str]:
        if not command[0].strip():
            raise ValueError("the command's first element (the program) must not be empty")
        return command

    @field_validator("env")
    @classmethod
    def _env_bounded(cls, env: dict[str, str]) -> dict[str, str]:
        size = sum(len(k.encode()) + len(v.encode()) for k, v in env.items())
        if size > MAX_ENV_BYTES:
            raise ValueError(f"the environment is {size} bytes; at most {MAX_ENV_BYTES}")
        return env


class ArrayRequest(Strict):
    spec: JobSpec
    count: int = Field(ge=1, le=100_000)


class SubmitCommand(Strict):
    owner_id: str
    spec: JobSpec


class SubmitArrayCommand(Strict):
    owner_id: str
    request: ArrayRequest


class JobView(Strict):
    id: str
    owner_id: str
    name: str | None
    array_id: str | None
    array_index: int | None
    spec: JobSpec
    status: JobStatus
    attempt: int
    node_id: str | None
    exit_code: int | None
    duration_s: float | None
    #: what the last attempt used, as its agent measured it (none before it ends, nor from an older agent)
    cpu_s: float | None = None
    max_rss_bytes: int | None = None
    error: str | None
    not_before: Timestamp | None
    submitted_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None


class ArrayView(Strict):
    array_id: str
    count: int
    #: only for arrays of up to 1,000 jobs
    job_ids: list[str] | None


class ArrayQuery(Strict):
    array_id: str = Field(max_length=64)
    by: Principal


class ArraySummary(Strict):
    """How far an array has got: how many of its jobs are in each status."""

    array_id: str
    count: int
    submitted_at: Timestamp
    #: jobs per status; a status no job is in is left out
    statuses: dict[JobStatus, int]
    #: jobs that have ended (succeeded, failed, timed out or cancelled): all of them once ``ended == count``
    ended: int


class JobPage(Strict):
    items: list[JobView]
    next_cursor: str | None


class JobQuery(Strict):
    job_id: str = Field(max_length=64)
    by: Principal


#: jobs per ``GET_JOBS``; the reply also stops at ``JOBS_REPLY_BYTES`` of specs (one may carry a 1 MiB argv),
#: well under NATS' 8 MB payload, and names the jobs it left out for that
MAX_JOBS_PER_QUERY = 200
JOBS_REPLY_BYTES = 2 << 20


class JobsQuery(Strict):
    job_ids: list[Annotated[str, StringConstraints(max_length=64)]] = Field(min_length=1, max_length=MAX_JOBS_PER_QUERY)
    by: Principal


class JobViews(Strict):
    """The jobs asked for that exist and that the asker may see, in the order they were asked for, as many as
    fit in ``JOBS_REPLY_BYTES`` (at least one); ``left_out`` are the ones that did not fit: ask again."""

    items: list[JobView]
    left_out: list[str] = Field(default=[])


class ListJobsQuery(Strict):
    by: Principal
    status: JobStatus | None = None
    array_id: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=128)
    order: JobOrder = "oldest"


class OutputQuery(Strict):
    """A job's output from ``offset`` (in characters): a follower asks again from the ``length`` it was given."""

    job_id: str = Field(max_length=64)
    by: Principal
    offset: int = Field(default=0, ge=0)


class JobOutput(Strict):
    """What the job printed, from the offset asked: all of it once it ended; while it runs, what its node has
    sent so far (every second or so, once it has run that long)."""

    output: str
    truncated: bool
    exit_code: int | None
    #: characters printed so far in all (the next offset to ask from)
    length: int = 0
    #: whether the job has ended: nothing more will come
    ended: bool = True
    #: the attempt this output is of: a retry prints anew, from character 0
    attempt: int = 1


class Explanation(Strict):
    job_id: str
    status: JobStatus
    decided_at: Timestamp | None
    summary: str | None
    #: why nodes were left out, and how many for each reason
    filtered: dict[str, int]
    #: the best-scoring nodes, best first, with the parts of their scores
    candidates: list[dict[str, Any]]


class Assignment(Strict):
    """What an agent is told to run (the ``assignment`` message, without its ``type``)."""

    job_id: str
    attempt: int
    command: list[str]
    env: dict[str, str]
    timeout_s: float
    resources: Resources
    output_limit_bytes: int = OUTPUT_LIMIT_BYTES
    network: JobNetwork = "host"


class NodeAssignments(Strict):
    assignments: list[Assignment]
    #: jobs the node may still be running that were cancelled meanwhile
    cancelled: list[dict[str, Any]] = Field(default=[])


class NodeAssignmentsQuery(Strict):
    node_id: NodeId


def _storable_or_none(value: str | None) -> str | None:
    return None if value is None else without_nul(value)


class Started(Strict):
    type: Literal["started"] = "started"
    job_id: str = Field(max_length=64)
    attempt: int = Field(ge=1, le=100)


#: the most CPU time a report may say an attempt used: ten days on 1,024 cores
MAX_CPU_S = 10 * 86_400 * 1024


class Finished(Strict):
    type: Literal["finished"] = "finished"
    job_id: str = Field(max_length=64)
    attempt: int = Field(ge=1, le=100)
    outcome: Outcome
    exit_code: int | None = Field(default=None, ge=-255, le=255)
    duration_s: float = Field(ge=0, le=10 * 86_400)
    output: str = Field(default="", max_length=OUTPUT_LIMIT_BYTES)
    output_truncated: bool = False
    error: str | None = Field(default=None, max_length=4096)
    #: CPU time (user and system) of the job's first process and the descendants it waited for
    cpu_s: float | None = Field(default=None, ge=0, le=MAX_CPU_S)
    #: the largest resident set of any one of those processes
    max_rss_bytes: int | None = Field(default=None, ge=0, le=2**50)

    #: a job may print anything, NUL included, and its report must still be recorded
    _storable = field_validator("output", "error")(_storable_or_none)


#: the most a report of output so far carries (characters): even escaped, it fits in an agent's message
OUTPUT_SO_FAR_CHARS = 256 * 1024


class OutputSoFar(Strict):
    """What a running attempt has printed, from ``offset`` (characters of its output). An agent sends it from
    the first character not acked yet, so a report lost on the way is made good by the next one."""

    type: Literal["output"] = "output"
    job_id: str = Field(max_length=64)
    attempt: int = Field(ge=1, le=100)
    offset: int = Field(ge=0, le=OUTPUT_LIMIT_BYTES)
    data: str = Field(min_length=1, max_length=OUTPUT_SO_FAR_CHARS)

    _storable = field_validator("data")(without_nul)


Report = Annotated[Started | Finished | OutputSoFar, Field(discriminator="type")]
#: reports per command, and the output (characters, of ``output`` and ``data``) they may carry together: as much as one
#: report may carry, which even as escaped JSON stays under NATS' 8 MB payload
MAX_REPORTS = 256
REPORTS_OUTPUT_BUDGET = OUTPUT_LIMIT_BYTES


class ReportsCommand(Strict):
    """A node's reports, in the order its agent sent them: recorded in one transaction."""

    node_id: NodeId
    reports: list[Report] = Field(min_length=1, max_length=MAX_REPORTS)
