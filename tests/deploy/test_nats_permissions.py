"""The generated per-service NATS users, enforced by a real NATS server started with them.

Each service can do what it does in production (publish its events, answer and send its requests,
pull its durable consumers, read its live feeds) and is refused the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy, StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import ServerError

from fog_shared.bus.permissions import (
    LIVE_READS,
    PROVISIONER,
    REQUESTS,
    all_permissions,
    main,
    password_variable,
    render,
)
from fog_shared.bus.provision import provision
from fog_shared.bus.topology import Topology, event_stream_name
from fog_shared.commands.gateway import ASSIGNMENTS, TIMELINE
from fog_shared.devservers import NatsServer
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.replay.rebuild import replay
from fog_shared.subjects import SERVICES, inbox_prefix, query_subject
from fog_shared.testing.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "deploy" / "k8s" / "base" / "nats" / "auth.conf"
USERS = (*SERVICES, PROVISIONER)


def test_committed_nats_users_are_generated_from_the_topology() -> None:
    assert main(["--check", str(COMMITTED)]) == 0, "run `make nats-auth`"


def test_no_password_is_written_into_the_configuration() -> None:
    text = render(all_permissions())
    for user in USERS:
        assert f"password: ${password_variable(user)}\n" in text


class Connection:
    """A client logged in as one user, recording the permission errors the server sends it."""

    def __init__(self, nc: NatsClient, errors: list[str]) -> None:
        self.nc, self.errors = nc, errors
        self.js = nc.jetstream(timeout=2)

    async def refused(self, subject: str) -> None:
        await wait_until(
            lambda: _async_true(any("permissions violation" in e and subject.lower() in e for e in self.errors)),
            timeout=5,
            what=f"a permissions violation for {subject}",
        )


async def _async_true(value: bool) -> bool:
    return value


@pytest.fixture
async def login(nats_with_users: NatsServer, nats_passwords: dict[str, str]) -> AsyncIterator[dict[str, Connection]]:
    """One connection per user, on a freshly provisioned topology (provisioned as the Job does)."""
    connections: dict[str, Connection] = {}
    for user in USERS:
        errors: list[str] = []

        async def record(exc: Exception, errors: list[str] = errors) -> None:
            errors.append(str(exc).lower())

        nc = await nats.connect(
            nats_with_users.url,
            user=user,
            password=nats_passwords[user],
            inbox_prefix=inbox_prefix(user),  # as every connection of the services does
            error_cb=record,
            allow_reconnect=False,
        )
        connections[user] = Connection(nc, errors)
    admin = connections[PROVISIONER].js
    for info in await admin.streams_info():
        await admin.delete_stream(info.config.name or "")
    await wait_until(lambda: _provisioned(admin), timeout=10, what="the topology provisioned afresh")
    try:
        yield connections
    finally:
        for connection in connections.values():
            await connection.nc.close()


async def _provisioned(admin: JetStreamContext) -> bool:
    # The server removes a deleted stream's files after it answers the delete; creating the
    # stream again before they are gone fails with "error creating store for stream" (10049).
    try:
        await provision(admin, Topology())
    except ServerError as exc:
        if exc.err_code != 10049:
            raise
        return False
    return True


async def _publish_event(connection: Connection, service: str, name: str) -> None:
    subject = f"fog.evt.{service}.{name}"
    ack = await connection.js.publish(
        subject, b"{}", stream=event_stream_name(service), headers={"Nats-Msg-Id": secrets.token_hex(8)}
    )
    assert ack.stream == event_stream_name(service)


@pytest.mark.parametrize("service", ["auth", "registry", "scheduler", "messaging"])
async def test_a_service_publishes_its_own_events_only(login: dict[str, Connection], service: str) -> None:
    me = login[service]
    await _publish_event(me, service, "thing.happened.v1")
    other = "registry" if service == "auth" else "auth"
    await me.nc.publish(f"fog.evt.{other}.thing.happened.v1", b"{}")
    await me.refused(f"fog.evt.{other}.thing.happened.v1")


@pytest.mark.parametrize("service", ["auth", "registry", "scheduler", "messaging", "gateway"])
async def test_no_service_administers_streams(login: dict[str, Connection], service: str) -> None:
    me = login[service]
    with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
        await me.nc.jetstream(timeout=0.5).add_stream(StreamConfig(name="ROGUE", subjects=["rogue.>"]))
    await me.refused("$JS.API.STREAM.CREATE.ROGUE")


async def test_the_gateway_calls_services_and_services_answer(login: dict[str, Connection]) -> None:
    async def answer(msg: Msg) -> None:
        await msg.respond(b'{"ok": true}')

    await login["auth"].nc.subscribe("fog.qry.auth.jwks.v1", queue="fog-auth", cb=answer)
    await login["auth"].nc.flush()

    async def answered() -> bytes | None:
        # Once in a while, under load, the first request beat the subscription (no responders).
        with contextlib.suppress(nats.errors.NoRespondersError):
            return (await login["gateway"].nc.request("fog.qry.auth.jwks.v1", b"{}", timeout=2)).data
        return None

    assert await wait_until(answered, timeout=10, what="auth's answer") == b'{"ok": true}'
    assert login["auth"].errors == login["gateway"].errors == []


async def test_a_service_cannot_read_the_replies_another_asked_for(login: dict[str, Connection]) -> None:
    """auth answers the gateway's login with tokens: no other service may listen where they arrive."""
    tokens = b'{"access_token": "secret"}'

    async def answer(msg: Msg) -> None:
        await msg.respond(tokens)

    await login["auth"].nc.subscribe("fog.cmd.auth.login.v1", queue="fog-auth", cb=answer)
    await login["auth"].nc.flush()
    eavesdropped: list[bytes] = []

    async def eavesdrop(msg: Msg) -> None:
        eavesdropped.append(msg.data)

    registry = login["registry"]
    for subject in ("_INBOX.>", f"{inbox_prefix('gateway')}.>", ">"):
        await registry.nc.subscribe(subject, cb=eavesdrop)
        await registry.refused(subject)

    async def answered() -> bytes | None:
        with contextlib.suppress(nats.errors.NoRespondersError):
            return (await login["gateway"].nc.request("fog.cmd.auth.login.v1", b"{}", timeout=2)).data
        return None

    assert await wait_until(answered, timeout=10, what="auth's answer") == tokens
    await registry.nc.flush()  # anything the server had sent the registry has been read by now
    assert eavesdropped == []
    assert login["gateway"].errors == login["auth"].errors == []


async def test_a_connection_without_its_users_inbox_prefix_gets_no_replies(
    nats_with_users: NatsServer, nats_passwords: dict[str, str], login: dict[str, Connection]
) -> None:
    """The prefix is not optional: a service connecting with nats-py's default could not ask anything."""
    errors: list[str] = []

    async def record(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(
        nats_with_users.url, user="gateway", password=nats_passwords["gateway"], error_cb=record, allow_reconnect=False
    )
    try:
        with pytest.raises((TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError)):
            await nc.request("fog.qry.auth.jwks.v1", b"{}", timeout=0.5)
        await wait_until(
            lambda: _async_true(any("permissions violation" in e and "_inbox." in e for e in errors)),
            timeout=5,
            what="the default inbox refused",
        )
    finally:
        await nc.close()


async def test_a_gateway_asks_every_gateway_replica_for_its_status_and_for_nothing_else(
    login: dict[str, Connection],
) -> None:
    """``GET /v1/admin/status`` lists every gateway replica: each answers the status query, any may ask it."""
    gateway, status = login["gateway"], query_subject("gateway", "status")

    async def answer(msg: Msg) -> None:
        await msg.respond(b'{"replica": "another gateway"}')

    await gateway.nc.subscribe(status, cb=answer)
    await gateway.nc.flush()
    assert (await gateway.nc.request(status, b"{}", timeout=2)).data == b'{"replica": "another gateway"}'
    assert gateway.errors == []
    await gateway.nc.publish("fog.qry.gateway.timeline.v1", b"{}")
    await gateway.refused("fog.qry.gateway.timeline.v1")


async def test_services_do_not_call_each_other(login: dict[str, Connection]) -> None:
    registry = login["registry"]
    await registry.nc.publish("fog.cmd.auth.login.v1", b"{}")
    await registry.refused("fog.cmd.auth.login.v1")


@pytest.mark.parametrize(
    ("subject", "pusher", "other", "not_its_own"),
    [
        (ASSIGNMENTS, "scheduler", "registry", "fog.cmd.gateway.anything_else.v1"),
        (TIMELINE, "messaging", "scheduler", ASSIGNMENTS),
    ],
)
async def test_each_fast_path_to_the_gateways_is_pushed_by_its_own_service_alone(
    login: dict[str, Connection], subject: str, pusher: str, other: str, not_its_own: str
) -> None:
    gateway = login["gateway"]
    subscription = await gateway.nc.subscribe(subject)
    await gateway.nc.flush()

    async def pushed() -> bytes | None:
        # Once in a while, under load, a first push was not delivered (as a first request once found no
        # responders, above): pushes are at most once, so push again until one arrives.
        await login[pusher].nc.publish(subject, b"{}")
        await login[pusher].nc.flush()
        with contextlib.suppress(nats.errors.TimeoutError):
            return (await subscription.next_msg(timeout=1)).data
        return None

    assert await wait_until(pushed, timeout=15, what=f"{pusher}'s push to the gateway") == b"{}"
    await login[other].nc.publish(subject, b"{}")
    await login[other].refused(subject)
    await login[pusher].nc.publish(not_its_own, b"{}")
    await login[pusher].refused(not_its_own)
    assert not any(subject.lower() in e for e in login[pusher].errors), "its own push was allowed"


async def test_a_service_cannot_listen_to_another_services_commands(login: dict[str, Connection]) -> None:
    scheduler = login["scheduler"]
    await scheduler.nc.subscribe("fog.cmd.auth.>")
    await scheduler.refused("fog.cmd.auth.>")


async def test_a_service_pulls_and_acks_its_own_durable(login: dict[str, Connection]) -> None:
    await _publish_event(login["registry"], "registry", "node.registered.v1")
    scheduler = login["scheduler"]
    subscription = await scheduler.js.pull_subscribe_bind(durable="scheduler__nodes", stream="EVT_REGISTRY")
    messages = await subscription.fetch(1, timeout=5)
    assert [m.subject for m in messages] == ["fog.evt.registry.node.registered.v1"]
    await messages[0].ack_sync(timeout=2)
    info = await login[PROVISIONER].js.consumer_info("EVT_REGISTRY", "scheduler__nodes")
    assert info.num_ack_pending == 0
    await subscription.unsubscribe()


@pytest.mark.parametrize(
    ("service", "durable", "producer", "event"),
    [
        ("scheduler", "scheduler__nodes", "registry", "node.registered.v1"),
        ("messaging", "messaging__users", "auth", "user.registered.v1"),
        ("messaging", "messaging__node_owners", "auth", "node_credential.issued.v1"),
    ],
)
async def test_a_service_replays_what_its_read_models_consumer_handled(
    login: dict[str, Connection], service: str, durable: str, producer: str, event: str
) -> None:
    """``fogctl events rebuild``: the service reads its consumer's stream from the start, as itself."""
    await _publish_event(login[producer], producer, event)
    reader = login[service]
    subscription = await reader.js.pull_subscribe_bind(durable=durable, stream=event_stream_name(producer))
    [handled] = await subscription.fetch(1, timeout=5)
    await handled.ack_sync(timeout=2)
    await subscription.unsubscribe()
    projected: list[str] = []

    async def project(event: Event, _: Envelope) -> None:
        projected.append(event.TYPE.name)

    replayed = await replay(reader.js, Topology().consumer(durable), project)
    assert replayed.upto_seq >= 1
    assert replayed.applied + replayed.skipped == 1  # read ("{}" without an envelope: read, not decoded)
    assert reader.errors == []


async def test_a_service_cannot_pull_another_services_durable(login: dict[str, Connection]) -> None:
    scheduler = login["scheduler"]
    subscription = await scheduler.js.pull_subscribe_bind(durable="messaging__users", stream="EVT_AUTH")
    with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
        await subscription.fetch(1, timeout=1)
    await scheduler.refused("$JS.API.CONSUMER.MSG.NEXT.EVT_AUTH.messaging__users")


async def test_a_consumer_dead_letters_its_own_poison_events(login: dict[str, Connection]) -> None:
    registry = login["registry"]
    ack = await registry.js.publish(
        "fog.dlq.registry__job_outcomes", b"{}", stream="DLQ", headers={"Nats-Msg-Id": secrets.token_hex(8)}
    )
    assert ack.stream == "DLQ"
    await registry.nc.publish("fog.dlq.scheduler__nodes", b"{}")
    await registry.refused("fog.dlq.scheduler__nodes")


async def test_the_gateway_follows_auth_events_live(login: dict[str, Connection]) -> None:
    received: asyncio.Queue[str] = asyncio.Queue()

    async def on_event(msg: Msg) -> None:
        await received.put(msg.subject)

    gateway = login["gateway"]
    await gateway.js.subscribe("fog.evt.auth.>", cb=on_event, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW)
    await _publish_event(login["auth"], "auth", "session.revoked.v1")
    assert await asyncio.wait_for(received.get(), timeout=5) == "fog.evt.auth.session.revoked.v1"


async def test_a_service_reads_no_stream_it_is_not_declared_to(login: dict[str, Connection]) -> None:
    registry = login["registry"]
    with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
        await registry.js.subscribe("fog.evt.messaging.>", stream="EVT_MESSAGING", ordered_consumer=True)
    await registry.refused("$JS.API.CONSUMER.CREATE.EVT_MESSAGING")


async def test_the_gateway_reads_every_streams_history_and_redrives_dead_letters(
    login: dict[str, Connection],
) -> None:
    """What `fogctl events` needs through the gateway's admin routes, and nothing that
    administers a stream."""
    gateway = login["gateway"]
    await _publish_event(login["messaging"], "messaging", "message.sent.v1")
    history = await gateway.js.subscribe("fog.evt.messaging.>", ordered_consumer=True)
    assert (await history.next_msg(timeout=5)).subject == "fog.evt.messaging.message.sent.v1"
    await history.unsubscribe()
    info = await gateway.js.stream_info("EVT_MESSAGING")
    assert info.state.messages == 1
    assert (await gateway.js.get_msg("EVT_MESSAGING", seq=info.state.first_seq)).data == b"{}"
    parked = await login["scheduler"].js.publish("fog.dlq.scheduler__nodes", b"{}", stream="DLQ")
    await _publish_event(gateway, "registry", "node.registered.v1")  # re-driven on its own subject
    await gateway.js.delete_msg("DLQ", parked.seq)
    assert gateway.errors == []


# -- the declarations the permissions rest on, against the services' code ----------------------------
def _sources(service: str) -> list[str]:
    package = REPO / "services" / service / f"fog_{service}"
    return [path.read_text() for path in package.rglob("*.py")]


def _imported_contracts(service: str) -> set[str]:
    """The services whose request/reply contracts (fog_shared.commands.<svc>) the code imports."""
    found = set()
    for source in _sources(service):
        found |= set(re.findall(r"from fog_shared\.commands import (\w+)", source))
        found |= set(re.findall(r"from fog_shared\.commands\.(\w+) import", source))
    return found - {"common", service}


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_that_sends_requests_is_declared_with_whom_it_calls(service: str) -> None:
    sends = any(re.search(r"from fog_shared\.bus\.rpc import .*\brequest|\.request\(", s) for s in _sources(service))
    assert sends == (service in REQUESTS), "update REQUESTS in fog_shared.bus.permissions"
    assert set(REQUESTS.get(service, ())) <= _imported_contracts(service), "a declared callee is never called"


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_that_follows_streams_live_is_declared(service: str) -> None:
    follows = any("ordered_consumer=True" in source for source in _sources(service))
    assert follows == bool(LIVE_READS.get(service)), "update LIVE_READS in fog_shared.bus.permissions"


async def test_only_messaging_keeps_files_in_the_object_store(login: dict[str, Connection]) -> None:
    bucket = await login["messaging"].js.object_store("FOG_FILES")
    await bucket.put("chunk-1", b"x" * 200_000)
    assert (await bucket.get("chunk-1")).data == b"x" * 200_000
    await bucket.put("chunk-1", b"again")  # a chunk sent again replaces the first
    assert (await bucket.get("chunk-1")).data == b"again"
    assert login["messaging"].errors == []
    gateway = login["gateway"]
    with pytest.raises((TimeoutError, nats.errors.TimeoutError)):
        await gateway.nc.jetstream(timeout=0.5).object_store("FOG_FILES")
    await gateway.refused("$JS.API.STREAM.INFO.OBJ_FOG_FILES")
