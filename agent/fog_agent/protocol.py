"""The messages of ``/v1/nodes/connect``: JSON text frames with a ``type`` member.

Server → agent: ``welcome`` (first, on every connection), ``error``, ``assignment``, ``cancel``,
``ack``, and types this agent does not know yet, which it ignores. Agent → server: ``heartbeat``,
the job reports ``started`` and ``finished``, and, when it shuts down, ``goodbye``. The job
messages are the contract of ``docs/jobs.md`` ("Agent ↔ gateway").
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fog_client import NodeUsage

CONNECT_PATH = "/v1/nodes/connect"
#: close codes after which trying again cannot help, and what they mean to whoever runs the agent
REFUSING_CLOSE_CODES = {
    4401: "the node credential is invalid or revoked; join again with `fog-agent join --force`",
    4403: "the gateway forbids what this node did",
    1008: "the gateway closed the connection for a policy violation",
}
#: a gateway that refuses before accepting the socket answers the handshake with one of these
REFUSING_HTTP_STATUSES = {
    401: "the node credential is invalid or revoked; join again with `fog-agent join --force`",
    403: "the gateway forbids this node to connect",
}
GOODBYE: dict[str, Any] = {"type": "goodbye", "reason": "shutdown"}
#: the largest message either side accepts (docs/jobs.md)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
#: the welcome's feature for a result's usage, and the fields it allows in a ``finished`` report
USAGE, USAGE_FIELDS = "usage", ("cpu_s", "max_rss_bytes")
#: the welcome's feature for the files a job gives back (a result's ``files``)
FILES, FILES_FIELDS = "files", ("files",)
#: what a ``finished`` report may carry only to a gateway whose welcome names the feature
FINISHED_FIELDS_BY_FEATURE = {USAGE: USAGE_FIELDS, FILES: FILES_FIELDS}


def fields_not_taken(features: frozenset[str]) -> tuple[str, ...]:
    """The fields of a ``finished`` report a gateway with these ``features`` would refuse."""
    return tuple(
        field for feature, fields in FINISHED_FIELDS_BY_FEATURE.items() if feature not in features for field in fields
    )


class ProtocolViolation(Exception):
    """The gateway sent something this agent cannot work with (a connection-level failure: reconnect)."""


@dataclass(frozen=True)
class Welcome:
    node_id: str
    heartbeat_interval_s: float
    #: what this gateway takes beyond the first protocol (``USAGE``: a result's ``cpu_s`` and ``max_rss_bytes``);
    #: a gateway refuses a message with a field it does not know, so an agent newer than its gateway leaves them out
    features: frozenset[str] = frozenset()


def connect_url(gateway_url: str) -> str:
    """``http(s)://host[/prefix]`` → ``ws(s)://host[/prefix]/v1/nodes/connect``: a gateway behind a path keeps it."""
    parts = urlsplit(gateway_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower())
    if scheme is None or not parts.netloc:
        raise ValueError(f"not an http(s) gateway URL: {gateway_url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + CONNECT_PATH, "", ""))


def heartbeat(node_id: str, seq: int, usage: NodeUsage, *, running_jobs: int = 0) -> dict[str, Any]:
    return {
        "type": "heartbeat",
        "node_id": node_id,
        "seq": seq,
        "running_jobs": running_jobs,
        "usage": usage.model_dump(mode="json"),
    }


def encode(message: dict[str, Any]) -> str:
    # Non-ASCII text as UTF-8, not \u escapes: a job's output full of U+FFFD stays 3 bytes a character, not 6.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def decode(raw: str | bytes) -> dict[str, Any] | None:
    """A message as a JSON object, or ``None`` when it is not one."""
    try:
        message = json.loads(raw)
    except ValueError:  # also UnicodeDecodeError
        return None
    return message if isinstance(message, dict) else None


def parse_welcome(message: dict[str, Any]) -> Welcome:
    node_id, interval = message.get("node_id"), message.get("heartbeat_interval_s")
    if not isinstance(node_id, str) or not node_id:
        raise ProtocolViolation("the welcome names no node")
    # bool is an int to Python, not to JSON; zero, negative or infinite intervals cannot pace heartbeats
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0 < interval < math.inf:
        raise ProtocolViolation(f"the welcome's heartbeat_interval_s is unusable: {interval!r}")
    features = message.get("features", [])
    if not isinstance(features, list) or not all(isinstance(feature, str) for feature in features):
        raise ProtocolViolation(f"the welcome's features are not a list of names: {features!r}"[:200])
    return Welcome(node_id, float(interval), frozenset(features))
