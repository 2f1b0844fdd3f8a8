"""The batched paths on a real PostgreSQL: sends group-committed (many in one transaction) and
the live streams' sync_many, each held to what one send or one sync does alone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from fog_messaging import service, store
from fog_messaging.app import MIGRATIONS
from fog_messaging.service.common import MessagingError
from fog_shared.commands import messaging as contract
from fog_shared.commands.auth import Principal
from fog_shared.pg.group_commit import GroupCommit
from fog_shared.pg.pool import create_pool
from fog_shared.testing.plugin import ServiceDbFactory

MEMBERS = [f"u{n}" for n in range(1, 6)]


def user(user_id: str) -> Principal:
    return Principal(kind="user", user_id=user_id, roles=["user"])


def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
async def pool(service_db: ServiceDbFactory) -> AsyncIterator[asyncpg.Pool]:
    db = await service_db("messaging", MIGRATIONS)
    pool = await create_pool(db.dsn, db.schema, max_size=4)
    async with pool.acquire() as conn:
        for member in MEMBERS:
            await store.upsert_user(conn, member, f"{member}@example.org", now())
    yield pool
    await pool.close()


async def make_group(pool: asyncpg.Pool) -> str:
    async with pool.acquire() as conn:
        group = contract.CreateGroupRequest(name="crew", member_ids=MEMBERS[1:])
        command = contract.CreateGroupCommand(by=user(MEMBERS[0]), group=group)
        view = await service.create_group(conn, command, now=now())
    return view.id


def sending(by: str, conversation_id: str, text: str, **message: object) -> service.Sending:
    request = contract.SendRequest(text=text, client_msg_id=message.pop("client_msg_id", uuid.uuid4().hex), **message)  # type: ignore[arg-type]
    return service.Sending(contract.SendCommand(by=user(by), conversation_id=conversation_id, message=request))


async def stored_seqs(conn: asyncpg.Connection, conversation_id: str) -> list[int]:
    rows = await conn.fetch(
        "SELECT seq FROM messages WHERE conversation_id = $1 ORDER BY seq", uuid.UUID(conversation_id)
    )
    return [row["seq"] for row in rows]


async def sent_events(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE subject LIKE '%.message.sent.%'"))


async def test_a_refused_send_in_a_batch_changes_nothing_and_refuses_only_itself(pool: asyncpg.Pool) -> None:
    group = await make_group(pool)
    first = sending("u1", group, "one", client_msg_id="c-1")
    batch = [
        first,
        sending("u2", group, "replies to nothing", reply_to_seq=99),
        sending("u3", group, "two"),
        sending("u1", group, "one again", client_msg_id="c-1"),  # a retry within the same batch
    ]
    async with pool.acquire() as conn:
        outcomes = await service.send_many(conn, batch, now=now())
        assert [o.message.seq for o in outcomes if isinstance(o, contract.SendReply)] == [1, 2, 1]
        refused = outcomes[1]
        assert isinstance(refused, MessagingError)
        assert refused.code == "invalid_reply_to"
        assert [o.created for o in outcomes if isinstance(o, contract.SendReply)] == [True, True, False]
        assert await stored_seqs(conn, group) == [1, 2]
        assert await sent_events(conn) == 2
        synced = await service.sync(conn, contract.SyncQuery(by=user("u4")), catch_up_max=1000)
    assert [(e.kind, e.message and e.message.text) for e in synced.entries] == [
        ("group_created", None),
        ("message", "one"),
        ("message", "two"),
    ]


async def test_concurrent_sends_through_the_group_commit_get_gapless_seqs_and_positions(pool: asyncpg.Pool) -> None:
    group = await make_group(pool)

    async def run_batch(conn: asyncpg.Connection, batch: list[service.Sending]) -> list[object]:
        return list(await service.send_many(conn, batch, now=now()))

    commits: GroupCommit[service.Sending, object] = GroupCommit(lambda: pool, run_batch, max_batch=16)  # type: ignore[arg-type]
    runner = asyncio.ensure_future(commits.run())
    try:
        texts = [f"m{n}" for n in range(60)]
        outcomes = await asyncio.gather(
            *(commits.submit(sending(MEMBERS[n % len(MEMBERS)], group, text)) for n, text in enumerate(texts))
        )
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert sorted(o.message.seq for o in outcomes if isinstance(o, contract.SendReply)) == list(range(1, 61))
    assert commits.requests == 60
    async with pool.acquire() as conn:
        assert await stored_seqs(conn, group) == list(range(1, 61))
        assert await sent_events(conn) == 60
        synced = await service.sync(conn, contract.SyncQuery(by=user("u5"), limit=1000), catch_up_max=1000)
    messages = [e for e in synced.entries if e.kind == "message"]
    positions = [e.position for e in synced.entries]
    assert positions == sorted(set(positions))  # strictly increasing
    assert [e.message.seq for e in messages if e.message] == list(range(1, 61))  # timeline order is seq order


async def sync_alone(
    conn: asyncpg.Connection, queries: list[contract.SyncQuery], catch_up_max: int
) -> list[contract.SyncReply | MessagingError]:
    alone: list[contract.SyncReply | MessagingError] = []
    for query in queries:
        try:
            alone.append(await service.sync(conn, query, catch_up_max=catch_up_max))
        except MessagingError as refused:
            alone.append(refused)
    return alone


def assert_same(many: service.SyncedMany, alone: list[contract.SyncReply | MessagingError]) -> None:
    assert len(many.parts) == len(alone)
    for part, single in zip(many.parts, alone, strict=True):
        if isinstance(single, MessagingError):
            assert isinstance(part, MessagingError)
            assert (part.code, part.detail) == (single.code, single.detail)
            continue
        assert isinstance(part, contract.SyncPart)
        assert [many.entries[p] for p in part.positions] == single.entries
        assert (part.next, part.limited, part.gap, part.more) == (single.next, single.limited, single.gap, single.more)


async def test_sync_many_answers_each_query_as_sync_alone_would(pool: asyncpg.Pool) -> None:
    group = await make_group(pool)
    catch_up_max = 5
    async with pool.acquire() as conn:
        head = await service.sync(conn, contract.SyncQuery(by=user("u2")), catch_up_max=1000)
        await service.send_many(conn, [sending("u1", group, f"m{n}") for n in range(6)], now=now())
        middle = await service.sync(conn, contract.SyncQuery(by=user("u3"), since=head.next), catch_up_max=1000)
        await service.send_many(conn, [sending("u2", group, f"n{n}") for n in range(2)], now=now())
        queries = [
            contract.SyncQuery(by=user("u2"), since=head.next),  # eight behind, past catch_up_max: limited
            contract.SyncQuery(by=user("u3"), since=middle.next),  # two behind: the one-statement path
            contract.SyncQuery(by=user("u4"), since="not-a-token"),  # refused, alone
            contract.SyncQuery(by=user("u5")),  # from the start: nine behind, limited
            contract.SyncQuery(by=Principal(kind="node", roles=["node"])),  # no member: refused, alone
            contract.SyncQuery(by=user("u1"), since="s999"),  # from the future: refused, alone
        ]
        many = await service.sync_many(conn, queries, catch_up_max=catch_up_max)
        assert_same(many, await sync_alone(conn, queries, catch_up_max))
        paged = [
            contract.SyncQuery(by=user("u1"), since=middle.next, limit=1),  # a page of one, more to come
            contract.SyncQuery(by=user("u4"), since=middle.next),
        ]
        many_paged = await service.sync_many(conn, paged, catch_up_max=catch_up_max)
        assert_same(many_paged, await sync_alone(conn, paged, catch_up_max))
    u2, u3, bad_token, u5, node, future = many.parts
    assert isinstance(u3, contract.SyncPart)
    assert len(u3.positions) == 2
    assert not u3.limited
    assert isinstance(u2, contract.SyncPart)
    assert u2.limited
    assert isinstance(u5, contract.SyncPart)
    assert u5.limited
    assert all(isinstance(part, MessagingError) for part in (bad_token, node, future))
    u1, u4 = many_paged.parts
    assert isinstance(u1, contract.SyncPart)
    assert u1.more
    assert isinstance(u4, contract.SyncPart)
    assert len(u4.positions) == 2
