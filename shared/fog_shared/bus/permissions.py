"""One NATS user per service, allowed only its own subjects, derived from the bus topology.

``python -m fog_shared.bus.permissions`` prints the ``authorization`` block of the NATS server
configuration; ``deploy/k8s/base/nats/auth.conf`` is that output, committed, and ``--check FILE``
fails when it is stale (as ``fog_shared.contracts --check`` does for the event schemas).
Passwords are not in it: each is a ``$NATS_PASSWORD_<USER>`` reference the server resolves from
its environment, which Kubernetes fills from a Secret.

What a service may do follows from the topology and from two declarations below:

* answer its own commands and queries (``fog.cmd.<svc>.>``, ``fog.qry.<svc>.>``), replying through
  ``allow_responses``;
* publish its own events (``fog.evt.<svc>.>``) when it has an event stream;
* pull, ack and dead-letter on its own durable consumers (``<svc>__<purpose>``) and nothing else;
* send commands and queries to the services in :data:`REQUESTS`;
* publish, without a reply, the other services' subjects in :data:`PUSHES`;
* read the streams in :data:`LIVE_READS` through ephemeral ordered consumers;
* replay the streams in :data:`REPLAYS` (``fogctl events rebuild``);
* for the :data:`OPERATOR` (the gateway, behind its admin-only routes): read every stream's
  history (``fogctl events history|tail|trace``) and re-drive dead letters, which means
  publishing a parked event again on its original subject and deleting it from ``DLQ``; and ask
  every gateway replica for its status (``fogctl status``).

Stream and consumer administration belongs to the provisioning user alone (DESIGN §8).
Each user subscribes to its own inboxes alone (``_INBOX.<user>.>``, :func:`inbox_prefix`), where
its replies and JetStream acks arrive: no service reads the replies another asked for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fog_shared.bus.topology import DEAD_LETTER_STREAM, ConsumerSpec, Topology, event_stream_name
from fog_shared.commands.gateway import ASSIGNMENTS, PREPARATIONS, TIMELINE
from fog_shared.subjects import COMMAND_PREFIX, QUERY_PREFIX, SERVICES, inbox_prefix, query_subject, service_events

JS_API = "$JS.API"
#: the user the provisioning Job runs as: it creates and updates streams and consumers
PROVISIONER = "provision"

#: whose commands and queries each service sends: only the gateway calls other services
REQUESTS: dict[str, tuple[str, ...]] = {"gateway": ("auth", "registry", "scheduler", "messaging")}

#: another service's subjects a service publishes to without asking for a reply (core NATS, at
#: most once): the scheduler's fast path of new assignments to the gateways (and of the preparations
#: before them), and messaging's of new timeline entries
PUSHES: dict[str, tuple[str, ...]] = {"scheduler": (ASSIGNMENTS, PREPARATIONS), "messaging": (TIMELINE,)}

#: streams a service reads with ephemeral ordered consumers: the gateway's revocation cache
#: (auth events), its job feeds to agents and users (scheduler events) and the wake-ups of its
#: sync long-polls and live streams (messaging events)
LIVE_READS: dict[str, tuple[str, ...]] = {
    "gateway": (event_stream_name("auth"), event_stream_name("scheduler"), event_stream_name("messaging"))
}

#: the JetStream object stores each belong to one service, the only one that reads and writes them
OBJECT_STORE_OWNERS: dict[str, str] = {"FOG_FILES": "messaging"}

#: streams a service replays into a scratch copy of its read model, to diff it against the live one
REPLAYS: dict[str, tuple[str, ...]] = {
    "scheduler": (event_stream_name("registry"),),
    "messaging": (event_stream_name("auth"),),
}

#: the service whose admin routes read every stream and re-drive dead letters for operators
OPERATOR = "gateway"
#: re-driving publishes parked events on their original subjects (whichever service's they are)
EVENT_SUBJECTS = "fog.evt.>"


@dataclass(frozen=True, slots=True)
class Permissions:
    user: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    #: may reply to requests it received (the reply inbox is not in ``publish``)
    allow_responses: bool = True


def reply_inboxes(user: str) -> str:
    """The subjects ``user`` subscribes to for its replies and acks (its connections' prefix)."""
    return f"{inbox_prefix(user)}.>"


def password_variable(user: str) -> str:
    """The environment variable the NATS server reads ``user``'s password from."""
    return f"NATS_PASSWORD_{user.upper()}"


def _answers(service: str) -> list[str]:
    return [f"{COMMAND_PREFIX}.{service}.>", f"{QUERY_PREFIX}.{service}.>"]


def _durable(spec: ConsumerSpec) -> list[str]:
    """Fetch from, look up and ack one durable; park its poison events in dead-letter."""
    stream, name = spec.stream, spec.durable
    return [
        f"{JS_API}.CONSUMER.MSG.NEXT.{stream}.{name}",
        f"{JS_API}.CONSUMER.INFO.{stream}.{name}",
        f"$JS.ACK.{stream}.{name}.>",
        spec.dead_letter_subject,
    ]


def _live_read(stream: str) -> list[str]:
    """An ordered consumer: found by subject, created, recreated after a gap, flow-controlled."""
    return [
        f"{JS_API}.CONSUMER.CREATE.{stream}",
        f"{JS_API}.CONSUMER.CREATE.{stream}.>",
        f"{JS_API}.CONSUMER.DELETE.{stream}.>",
        f"{JS_API}.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
    ]


def _history(stream: str) -> list[str]:
    """What reading a stream's history takes beyond a live read: its bounds and single messages."""
    return [*_live_read(stream), f"{JS_API}.STREAM.INFO.{stream}", f"{JS_API}.STREAM.MSG.GET.{stream}"]


def _object_store(bucket: str) -> list[str]:
    """Put, get (meta by direct get, chunks by an ordered consumer) and replace objects of one
    bucket, whose stream is ``OBJ_<bucket>``."""
    stream = f"OBJ_{bucket}"
    return [
        f"$O.{bucket}.>",
        f"{JS_API}.STREAM.NAMES",  # reading chunks looks the stream up by subject
        f"{JS_API}.STREAM.INFO.{stream}",
        f"{JS_API}.STREAM.MSG.GET.{stream}",
        f"{JS_API}.DIRECT.GET.{stream}.>",
        f"{JS_API}.STREAM.PURGE.{stream}",
        *_live_read(stream),
    ]


def _operator(topology: Topology) -> list[str]:
    publish = [f"{JS_API}.STREAM.NAMES"]
    for spec in topology.streams:
        publish += _history(spec.name)
    # GET /v1/admin/status asks every gateway replica too, this one among them (its other queries are not asked)
    gateways = query_subject(OPERATOR, "status")
    return [*publish, f"{JS_API}.STREAM.MSG.DELETE.{DEAD_LETTER_STREAM.name}", EVENT_SUBJECTS, gateways]


def service_permissions(service: str, topology: Topology | None = None) -> Permissions:
    topology = topology or Topology()
    stream_names = {spec.name for spec in topology.streams}
    publish: list[str] = []
    if event_stream_name(service) in stream_names:
        publish.append(service_events(service))
    for spec in topology.consumers:
        if spec.service == service:
            publish += _durable(spec)
    for callee in REQUESTS.get(service, ()):
        publish += _answers(callee)
    publish += PUSHES.get(service, ())
    if LIVE_READS.get(service):
        publish.append(f"{JS_API}.STREAM.NAMES")
        for stream in LIVE_READS[service]:
            publish += _live_read(stream)
    for stream in REPLAYS.get(service, ()):
        publish += _history(stream)
    for bucket in topology.object_stores:
        if OBJECT_STORE_OWNERS.get(bucket) == service:
            publish += _object_store(bucket)
    if service == OPERATOR:
        publish += _operator(topology)
    unique = tuple(dict.fromkeys(publish))  # in order, each once
    return Permissions(service, unique, (*_answers(service), reply_inboxes(service)))


def provisioner_permissions() -> Permissions:
    return Permissions(PROVISIONER, (f"{JS_API}.>",), (reply_inboxes(PROVISIONER),), allow_responses=False)


def all_permissions(topology: Topology | None = None) -> list[Permissions]:
    return [*(service_permissions(svc, topology) for svc in SERVICES), provisioner_permissions()]


def _user_block(perms: Permissions) -> str:
    permissions: dict[str, object] = {
        "publish": {"allow": list(perms.publish)},
        "subscribe": {"allow": list(perms.subscribe)},
    }
    if perms.allow_responses:
        permissions["allow_responses"] = True
    # NATS config accepts JSON values; the password stays a bare variable reference.
    return (
        f"    {{\n      user: {json.dumps(perms.user)}\n      password: ${password_variable(perms.user)}\n"
        f"      permissions: {json.dumps(permissions, indent=2).replace(chr(10), chr(10) + '      ')}\n    }}"
    )


def render(users: Sequence[Permissions]) -> str:
    blocks = "\n".join(_user_block(user) for user in users)
    return (
        "# Generated by `python -m fog_shared.bus.permissions` from the bus topology: do not edit.\n"
        "# Each password is read from the server's environment (a Secret), never stored here.\n"
        f"authorization {{\n  users: [\n{blocks}\n  ]\n}}\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--check", type=Path, help="fail unless this file holds the current configuration")
    args = parser.parse_args(argv)
    text = render(all_permissions())
    if args.check is None:
        sys.stdout.write(text)
        return 0
    if not args.check.exists() or args.check.read_text() != text:
        sys.stderr.write(f"{args.check} is stale: run `make nats-auth`\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
