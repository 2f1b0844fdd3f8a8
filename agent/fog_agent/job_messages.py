"""The job messages of ``/v1/nodes/connect`` (``docs/jobs.md``, "Agent ↔ gateway").

In: ``assignment``, ``prepare`` (an assignment about to come, as one) and ``withdraw``, ``cancel`` and
``ack``. Out: the reports ``started`` and ``finished``. Parsing checks what the agent acts on and names the
first problem; ``finished`` always fits in ``MAX_MESSAGE_BYTES``, whatever the job printed.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args

from fog_agent.protocol import MAX_MESSAGE_BYTES, encode

#: a job attempt, as every job message names it: (job_id, attempt)
JobKey = tuple[str, int]
Outcome = Literal["succeeded", "failed", "timed_out", "cancelled"]
ReportKind = Literal["started", "finished", "output"]
#: the network a job runs with: the node's own, or none but loopback (docs/jobs.md, "Network")
Network = Literal["host", "none"]

MIB = 1024 * 1024
#: what docs/jobs.md gives a job that asks for nothing; an assignment without them gets these
DEFAULT_TIMEOUT_S, DEFAULT_OUTPUT_LIMIT_BYTES = 3600.0, MIB
DEFAULT_CPU_CORES, DEFAULT_MEMORY_BYTES, DEFAULT_GPUS = 1.0, 256 * MIB, 0
MAX_JOB_ID = 256
#: the most an ``output`` report carries (characters): even escaped as JSON (up to 6 bytes a character),
#: it fits in a message
OUTPUT_SO_FAR_CHARS = 256 * 1024
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: a job's files (docs/jobs.md, "Files"): given, and asked back; their paths are relative to its directory. The
#: gateway takes 512 KiB given; an agent takes up to 1 MiB, in case a gateway is let take more
MAX_INPUT_FILES, MAX_INPUT_BYTES = 64, MIB
MAX_OUTPUT_FILES, MAX_OUTPUT_BYTES = 16, MIB
MAX_PATH_CHARS = 255


class BadMessage(ValueError):
    """A job message the agent cannot act on. ``key`` names its job attempt when that much was readable."""

    def __init__(self, why: str, key: JobKey | None = None) -> None:
        super().__init__(why)
        self.key = key


@dataclass(frozen=True)
class Resources:
    cpu_cores: float = DEFAULT_CPU_CORES
    memory_bytes: int = DEFAULT_MEMORY_BYTES
    gpus: int = DEFAULT_GPUS
    #: what it may hold beneath its directory; 0: it stated nothing (docs/jobs.md, "Disk")
    disk_bytes: int = 0


@dataclass(frozen=True)
class Assignment:
    job_id: str
    attempt: int
    command: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = DEFAULT_TIMEOUT_S
    resources: Resources = field(default_factory=Resources)
    output_limit_bytes: int = DEFAULT_OUTPUT_LIMIT_BYTES
    network: Network = "host"
    #: written into its working directory before it starts: path -> content
    files: dict[str, bytes] = field(default_factory=dict)
    #: read back from there once it ended, and reported with its end
    outputs: tuple[str, ...] = ()

    @property
    def key(self) -> JobKey:
        return (self.job_id, self.attempt)


@dataclass(frozen=True)
class OutputFile:
    """A file the job asked to have back, as it was when it ended (``truncated``: its first ``len(data)`` of
    ``size`` bytes, the rest past the outputs' budget)."""

    path: str
    data: bytes
    size: int
    truncated: bool = False


@dataclass(frozen=True)
class Result:
    """How an attempt ended: the body of its ``finished`` report."""

    outcome: Outcome
    exit_code: int | None
    duration_s: float
    output: str = ""
    output_truncated: bool = False
    error: str | None = None
    #: CPU time (user and system) of the job's first process and the descendants it waited for
    cpu_s: float | None = None
    #: the largest resident set of any one of those processes
    max_rss_bytes: int | None = None
    #: the files it asked back that it left (a path it left nothing regular at is not among them)
    files: tuple[OutputFile, ...] = ()


def job_key(message: dict[str, Any]) -> JobKey:
    job_id, attempt = message.get("job_id"), message.get("attempt")
    if not isinstance(job_id, str) or not 0 < len(job_id) <= MAX_JOB_ID:
        raise BadMessage(f"job_id is not a string of 1 to {MAX_JOB_ID} characters: {job_id!r}"[:200])
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:  # JSON's true is no number
        raise BadMessage(f"attempt is not a positive integer: {attempt!r}"[:200])
    return (job_id, attempt)


def parse_assignment(message: dict[str, Any]) -> Assignment:
    key = job_key(message)
    try:
        return Assignment(
            *key,
            command=_command(message.get("command")),
            env=_env(message.get("env", {})),
            timeout_s=_positive_number(message.get("timeout_s", DEFAULT_TIMEOUT_S), "timeout_s"),
            resources=_resources(message.get("resources", {})),
            output_limit_bytes=_int_at_least(
                message.get("output_limit_bytes", DEFAULT_OUTPUT_LIMIT_BYTES), 0, "output_limit_bytes"
            ),
            network=_network(message.get("network", "host")),
            files=_input_files(message.get("files", {})),
            outputs=_outputs(message.get("outputs", [])),
        )
    except BadMessage as exc:
        raise BadMessage(str(exc), key) from None


@dataclass(frozen=True)
class Ack:
    key: JobKey
    report: ReportKind
    #: of ``output``: the character the gateway has the attempt's output up to
    through: int = 0


def parse_ack(message: dict[str, Any]) -> Ack:
    key = job_key(message)
    report = message.get("report")
    if report not in get_args(ReportKind):
        raise BadMessage(f"an ack of an unknown report: {report!r}"[:200], key)
    if report != "output":
        return Ack(key, cast(ReportKind, report))
    return Ack(key, "output", _int_at_least(message.get("through"), 0, "through"))


def started(key: JobKey) -> dict[str, Any]:
    return {"type": "started", "job_id": key[0], "attempt": key[1]}


def output_so_far(key: JobKey, offset: int, data: str) -> dict[str, Any]:
    """What a running attempt printed, from character ``offset``: at most ``OUTPUT_SO_FAR_CHARS`` of it."""
    return {
        "type": "output", "job_id": key[0], "attempt": key[1], "offset": offset, "data": data[:OUTPUT_SO_FAR_CHARS]
    }  # fmt: skip


def finished(key: JobKey, result: Result, *, max_bytes: int = MAX_MESSAGE_BYTES) -> dict[str, Any]:
    """The ``finished`` report, its output cut further when escaping would make the message too large.

    The output limit counts the job's bytes, but JSON may spend up to 6 bytes on one of them (a control
    character becomes ``\\u0001``): 1 MiB of such output would make a message the gateway refuses,
    and the report would be resent, refused again, forever.
    """
    report: dict[str, Any] = {
        "type": "finished",
        "job_id": key[0],
        "attempt": key[1],
        "outcome": result.outcome,
        "exit_code": result.exit_code,
        "duration_s": round(result.duration_s, 3),
        "output": result.output,
        "output_truncated": result.output_truncated,
        "error": result.error,
    }
    if result.cpu_s is not None:  # measured: the job ran (said only then, as a gateway before them knows neither)
        report.update(cpu_s=result.cpu_s, max_rss_bytes=result.max_rss_bytes)
    if result.files:  # said only then, as for cpu_s
        report["files"] = [
            {"path": f.path, "data": base64.b64encode(f.data).decode(), "size": f.size, "truncated": f.truncated}
            for f in result.files
        ]
    size = len(encode(report).encode())
    while size > max_bytes:
        output: str = report["output"]
        # proportionally, less a margin; every character is at least one byte, so this ends
        keep = max(0, min(len(output) - 1, len(output) * max_bytes // size - 64))
        report.update(output=output[:keep], output_truncated=True)
        size = len(encode(report).encode())
    return report


def _command(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(part, str) for part in value):
        raise BadMessage("command is not a non-empty list of strings")
    if not value[0]:
        raise BadMessage("command names no program")
    return tuple(value)


def _env(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadMessage("env is not an object")
    for name, text in value.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name) or not isinstance(text, str):
            raise BadMessage(f"env has an unusable variable: {name!r}"[:200])
    return dict(value)


def _resources(value: object) -> Resources:
    if not isinstance(value, dict):
        raise BadMessage("resources is not an object")
    return Resources(
        cpu_cores=_positive_number(value.get("cpu_cores", DEFAULT_CPU_CORES), "resources.cpu_cores"),
        memory_bytes=_int_at_least(value.get("memory_bytes", DEFAULT_MEMORY_BYTES), 1, "resources.memory_bytes"),
        gpus=_int_at_least(value.get("gpus", DEFAULT_GPUS), 0, "resources.gpus"),
        disk_bytes=_int_at_least(value.get("disk_bytes", 0), 0, "resources.disk_bytes"),
    )


def job_path(value: object, name: str) -> str:
    """A path in a job's working directory: relative, each part a name (no ``..``, no empty part), no NUL."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PATH_CHARS or "\x00" in value:
        raise BadMessage(f"{name} is not a path of 1 to {MAX_PATH_CHARS} characters: {value!r}"[:200])
    parts = value.split("/")
    if value.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise BadMessage(f"{name} is not a relative path of plain names: {value!r}"[:200])
    return value


def _input_files(value: object) -> dict[str, bytes]:
    if not isinstance(value, dict) or len(value) > MAX_INPUT_FILES:
        raise BadMessage(f"files is not an object of at most {MAX_INPUT_FILES} paths")
    files: dict[str, bytes] = {}
    for path, content in value.items():
        if not isinstance(content, str):
            raise BadMessage(f"files[{path!r}] is not base64 text"[:200])
        try:
            files[job_path(path, "a file's path")] = base64.b64decode(content, validate=True)
        except binascii.Error:
            raise BadMessage(f"files[{path!r}] is not base64"[:200]) from None
    if sum(len(data) for data in files.values()) > MAX_INPUT_BYTES:
        raise BadMessage(f"files hold more than {MAX_INPUT_BYTES} bytes")
    return files


def _outputs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_OUTPUT_FILES:
        raise BadMessage(f"outputs is not a list of at most {MAX_OUTPUT_FILES} paths")
    return tuple(dict.fromkeys(job_path(path, "an output's path") for path in value))


def _network(value: object) -> Network:
    # A network this agent does not know is refused, never run as the node's own: the job asked to be kept from it.
    if value not in get_args(Network):
        raise BadMessage(f"network is not one of {', '.join(get_args(Network))}: {value!r}"[:200])
    return cast(Network, value)


def _positive_number(value: object, name: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < math.inf:  # NaN fails too
        return float(value)
    raise BadMessage(f"{name} is not a positive number: {value!r}"[:200])


def _int_at_least(value: object, minimum: int, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
        return value
    raise BadMessage(f"{name} is not an integer >= {minimum}: {value!r}"[:200])
