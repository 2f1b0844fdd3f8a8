"""Requests the scheduler answers, and its replies: the job API behind ``/v1/jobs``, and the
agents' reports relayed by the gateway. See docs/jobs.md."""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints, field_validator, model_validator

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
#: the files a job gave back (its ``outputs``), and one of them
JOB_FILES = query_subject("scheduler", "job_files")
JOB_FILE = query_subject("scheduler", "job_file")
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
#: a job's files (docs/jobs.md, "Files"): those it is given (512 KiB: in base64 they fit the gateway's 1 MiB
#: request body with the rest of the spec), and those it gives back (1 MiB, as its output)
MAX_INPUT_FILES, MAX_INPUT_BYTES = 64, 512 << 10
MAX_OUTPUT_FILES, MAX_OUTPUT_BYTES = 16, 1 << 20
#: base64 of ``MAX_*_BYTES``: 4 characters for each 3 bytes
_BASE64_CHARS = 4 * (((1 << 20) + 2) // 3)


def _job_path(path: str) -> str:
    parts = path.split("/")
    if path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError("a path in the job's directory: relative, of plain names (no '..', no empty part)")
    return path


#: a path in a job's working directory, as its agent takes it (fog_agent.job_messages.job_path)
JobPath = Annotated[Text, StringConstraints(min_length=1, max_length=255), AfterValidator(_job_path)]


def _job_or_array_id(text: str) -> str:
    try:
        return str(uuid.UUID(text))  # one spelling of each: any case, with or without dashes
    except ValueError:
        raise ValueError(f"{text!r} is not the id of a job or an array") from None


#: a job's or an array's id, as ``after`` names what a job waits for
JobOrArrayId = Annotated[str, StringConstraints(max_length=64), AfterValidator(_job_or_array_id)]
#: the most jobs and arrays one job may wait for
MAX_AFTER = 64


def decoded_size(text: str) -> int:
    """The bytes base64 ``text`` holds; ``ValueError`` when it is not base64."""
    try:
        return len(base64.b64decode(text, validate=True))
    except binascii.Error:
        raise ValueError("not base64") from None


Base64 = Annotated[str, StringConstraints(max_length=_BASE64_CHARS)]


class Resources(Strict):
    cpu_cores: float = Field(default=1.0, gt=0, le=256)
    memory_bytes: int = Field(default=256 << 20, ge=1 << 20, le=1 << 42)
    gpus: int = Field(default=0, ge=0, le=16)
    #: what the job may write beneath its directory (its ``/tmp`` too): placed only where the node's disk for jobs
    #: (``Capabilities.disk_bytes``) has that much left, and stopped, ``failed``, once it holds more. 0: it states
    #: no need, is placed by none, and only the node's reserve bounds it (docs/jobs.md, "Disk")
    disk_bytes: int = Field(default=0, ge=0, le=1 << 50)


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
    #: written into the job's directory before it starts: path -> content (base64), 512 KiB in all
    files: dict[JobPath, Base64] = Field(default={}, max_length=MAX_INPUT_FILES)
    #: read back from there once it ended (whatever its outcome): ``GET /v1/jobs/{id}/files``, 1 MiB in all
    outputs: list[JobPath] = Field(default=[], max_length=MAX_OUTPUT_FILES)
    #: jobs, or whole arrays, of the same owner that must all succeed before this one is placed (Slurm's afterok);
    #: should one of them fail, time out or be cancelled, this one is cancelled, never run
    after: list[JobOrArrayId] = Field(default=[], max_length=MAX_AFTER)
    #: jobs, or whole arrays, of the same owner that must all have ended, however, before this one is placed
    #: (Slurm's afterany: a clean-up, a report of what succeeded)
    after_any: list[JobOrArrayId] = Field(default=[], max_length=MAX_AFTER)

    @field_validator("after", "after_any")
    @classmethod
    def _named_once(cls, named: list[str]) -> list[str]:
        if len(set(named)) != len(named):
            raise ValueError("a job or array is named more than once")
        return named

    @model_validator(mode="after")
    def _after_one_way(self) -> JobSpec:
        both = set(self.after) & set(self.after_any)
        if both:
            raise ValueError(f"{sorted(both)[0]} is in both after and after_any: name it in one")
        if len(self.after) + len(self.after_any) > MAX_AFTER:
            raise ValueError(f"after and after_any name more than {MAX_AFTER} jobs and arrays in all")
        return self

    @field_validator("files")
    @classmethod
    def _files_bounded(cls, files: dict[str, str]) -> dict[str, str]:
        size = sum(decoded_size(text) for text in files.values())
        if size > MAX_INPUT_BYTES:
            raise ValueError(f"the files hold {size} bytes; at most {MAX_INPUT_BYTES}")
        return files

    @field_validator("outputs")
    @classmethod
    def _outputs_once(cls, outputs: list[str]) -> list[str]:
        if len(set(outputs)) != len(outputs):
            raise ValueError("a path is asked back more than once")
        return outputs

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
    #: how many of the jobs it is to run after have not succeeded (``spec.after``) or ended (``spec.after_any``) yet:
    #: it waits, unplaced, for them
    waiting_for: int = 0


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
    #: only the jobs of this name (the spec's ``name``, exactly)
    name: Text | None = Field(default=None, min_length=1, max_length=128)
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=128)
    order: JobOrder = "oldest"


class OutputQuery(Strict):
    """A job's output from ``offset`` (in characters): a follower asks again from the ``length`` it was given."""

    job_id: str = Field(max_length=64)
    by: Principal
    offset: int = Field(default=0, ge=0)


class JobFileQuery(Strict):
    """The files a job gave back (``path`` None), or the one at ``path``."""

    job_id: str = Field(max_length=64)
    by: Principal
    path: JobPath | None = None


class JobFileInfo(Strict):
    path: str
    #: the file's size as the job left it; ``truncated``: only its first bytes were kept (the outputs' budget)
    size: int
    truncated: bool
    #: the attempt that left it (the last one that ended)
    attempt: int


class JobFiles(Strict):
    """What a job gave back of its ``outputs``: the files (in the spec's order) and the paths it left nothing at.
    Before its first attempt ends, none yet (``ended`` false)."""

    items: list[JobFileInfo]
    missing: list[str]
    ended: bool


class JobFile(JobFileInfo):
    data: str  # base64


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


class Waited(Strict):
    """A job that another waits for, and where it stands: ``needs`` it to succeed (``after``) or to end
    (``after_any``)."""

    job_id: str
    status: JobStatus
    needs: Literal["success", "end"] = "success"


class Explanation(Strict):
    job_id: str
    status: JobStatus
    decided_at: Timestamp | None
    summary: str | None
    #: why nodes were left out, and how many for each reason
    filtered: dict[str, int]
    #: the best-scoring nodes, best first, with the parts of their scores
    candidates: list[dict[str, Any]]
    #: of the jobs it is to run after, those it still waits for (the first ``WAITED_SHOWN``)
    waiting_for: list[Waited] = Field(default=[])
    #: how many it still waits for in all (``waiting_for`` lists the first of them)
    waiting_count: int = Field(default=0, ge=0)


#: the most of the jobs a job waits for that its explanation lists
WAITED_SHOWN = 20


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
    files: dict[str, str] = Field(default={})
    outputs: list[str] = Field(default=[])


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


class OutputFile(Strict):
    """A file an attempt gave back: its first ``len(data)`` bytes of ``size`` (``truncated`` past the budget)."""

    path: JobPath
    data: Base64
    size: int = Field(ge=0, le=2**50)
    truncated: bool = False


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
    #: the files the job asked back that it left (its spec's ``outputs``; a path it left nothing at is absent)
    files: list[OutputFile] = Field(default=[], max_length=MAX_OUTPUT_FILES)

    #: a job may print anything, NUL included, and its report must still be recorded
    _storable = field_validator("output", "error")(_storable_or_none)

    @field_validator("files")
    @classmethod
    def _files_bounded(cls, files: list[OutputFile]) -> list[OutputFile]:
        if sum(decoded_size(f.data) for f in files) > MAX_OUTPUT_BYTES:
            raise ValueError(f"the files hold more than {MAX_OUTPUT_BYTES} bytes")
        return files


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
