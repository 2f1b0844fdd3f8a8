"""Subject names: the one place that knows how Fog spells its NATS subjects.

Events are persisted: ``fog.evt.<service>.<aggregate>.<event>.v<N>``.
Commands and queries are request/reply, not persisted: ``fog.cmd.<service>.<name>.v<N>`` and
``fog.qry.<service>.<name>.v<N>``. Ids never go into subjects (metrics are labelled by subject).
"""

from __future__ import annotations

import re

SERVICES: tuple[str, ...] = ("auth", "registry", "scheduler", "messaging", "gateway")

_TOKEN = re.compile(r"^[a-z][a-z0-9_]*$")

EVENT_PREFIX = "fog.evt"
COMMAND_PREFIX = "fog.cmd"
QUERY_PREFIX = "fog.qry"
DEAD_LETTER_PREFIX = "fog.dlq"
INBOX_ROOT = "_INBOX"


def _token(value: str, what: str) -> str:
    if not _TOKEN.match(value):
        raise ValueError(f"{what} {value!r} must be lower-case letters, digits and '_'")
    return value


def _version(version: int) -> str:
    if version < 1:
        raise ValueError(f"version must be >= 1, got {version}")
    return f"v{version}"


def event_subject(service: str, aggregate: str, event: str, version: int) -> str:
    """``fog.evt.scheduler.job.assigned.v1``."""
    parts = (_token(service, "service"), _token(aggregate, "aggregate"), _token(event, "event"))
    return ".".join((EVENT_PREFIX, *parts, _version(version)))


def command_subject(service: str, name: str, version: int = 1) -> str:
    """``fog.cmd.auth.login.v1``."""
    return ".".join((COMMAND_PREFIX, _token(service, "service"), _token(name, "name"), _version(version)))


def query_subject(service: str, name: str, version: int = 1) -> str:
    """``fog.qry.registry.get_node.v1``."""
    return ".".join((QUERY_PREFIX, _token(service, "service"), _token(name, "name"), _version(version)))


def service_events(service: str) -> str:
    """Wildcard for every event one service publishes: ``fog.evt.auth.>``."""
    return f"{EVENT_PREFIX}.{_token(service, 'service')}.>"


def dead_letter_subject(consumer: str) -> str:
    """Where a consumer's poison events go: ``fog.dlq.<consumer>``."""
    return f"{DEAD_LETTER_PREFIX}.{_token(consumer, 'consumer')}"


def event_type_of(subject: str) -> str:
    """The CloudEvents ``type`` of an event subject: the subject without ``fog.evt.``."""
    prefix = EVENT_PREFIX + "."
    if not subject.startswith(prefix):
        raise ValueError(f"{subject!r} is not an event subject")
    return subject[len(prefix) :]


def inbox_prefix(user: str) -> str:
    """Where ``user``'s replies and JetStream acks arrive: ``_INBOX.gateway``, then ``.<unique>``.

    Each NATS user subscribes only below its own prefix, so one service cannot read the replies
    another asked for (auth's tokens to the gateway, say). Every connection a service opens passes
    it as nats-py's ``inbox_prefix``.
    """
    return f"{INBOX_ROOT}.{_token(user, 'user')}"
