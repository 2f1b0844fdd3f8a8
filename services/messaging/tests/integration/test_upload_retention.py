"""Uploads that never complete, on a real PostgreSQL and the real JetStream object store: removed once idle
(their rows and their chunks), cancelled by their uploader, and capped per member; a removal is finished by
the next sweep when a process dies halfway, and an upload with a chunk on its way in is never removed."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from nats.aio.client import Client as NatsClient
from prometheus_client import REGISTRY
from pydantic import SecretStr

from fog_messaging import service, store
from fog_messaging.app import MIGRATIONS, build_app
from fog_messaging.config import Settings
from fog_messaging.handlers import JetStreamObjects
from fog_messaging.service import files
from fog_messaging.service.common import MessagingError
from fog_shared.bus.topology import Topology
from fog_shared.commands import messaging as contract
from fog_shared.commands.auth import Principal
from fog_shared.pg.pool import create_pool
from fog_shared.testing.plugin import Provisioner, Servers, ServiceDb, ServiceDbFactory, settings_in_schema
from fog_shared.testing.waiting import wait_until

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
DAY_S = DAY.total_seconds()
ALICE, BOB = "alice-id", "bob-id"


def user(user_id: str) -> Principal:
    return Principal(kind="user", user_id=user_id, roles=["user"])


@dataclass
class Place:
    db: ServiceDb
    pool: asyncpg.Pool
    objects: JetStreamObjects
    conversation: str


@pytest.fixture
async def place(
    service_db: ServiceDbFactory, provision_topology: Provisioner, nats_client: NatsClient
) -> AsyncIterator[Place]:
    """A messaging schema, the object store, and a group of Alice and Bob."""
    await provision_topology(Topology())
    db = await service_db("messaging", MIGRATIONS)
    pool = await create_pool(db.dsn, db.schema, max_size=8)
    async with pool.acquire() as conn:
        for member in (ALICE, BOB):
            await store.upsert_user(conn, member, f"{member}@example.org", T0)
        group = contract.CreateGroupCommand(
            by=user(ALICE), group=contract.CreateGroupRequest(name="g", member_ids=[BOB])
        )
        conversation = (await service.create_group(conn, group, now=T0)).id
    yield Place(db, pool, JetStreamObjects(nats_client.jetstream), conversation)
    await pool.close()


async def start(
    place: Place, data: bytes, *, at: datetime, by: str = ALICE, open_max: int = 16, bytes_max: int = 1 << 30
) -> str:
    upload = contract.FileUploadRequest(name="f.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    command = contract.StartUploadCommand(by=user(by), conversation_id=place.conversation, upload=upload)
    async with place.pool.acquire() as conn:
        return (await files.start(conn, command, now=at, open_max=open_max, bytes_max=bytes_max)).id


async def send_chunk(place: Place, file_id: str, data: bytes, index: int, *, at: datetime, by: str = ALICE) -> None:
    chunk = data[index * contract.CHUNK_BYTES : (index + 1) * contract.CHUNK_BYTES]
    command = contract.ChunkCommand(
        by=user(by), file_id=file_id, index=index, sha256=hashlib.sha256(chunk).hexdigest(),
        data=base64.b64encode(chunk).decode(),
    )  # fmt: skip
    async with place.pool.acquire() as conn:
        await files.put_chunk(conn, place.objects, command, now=at)


async def upload_whole(place: Place, data: bytes, *, at: datetime, by: str = ALICE, bytes_max: int = 1 << 30) -> str:
    file_id = await start(place, data, at=at, by=by, bytes_max=bytes_max)
    for index in range(-(-len(data) // contract.CHUNK_BYTES)):
        await send_chunk(place, file_id, data, index, at=at, by=by)
    async with place.pool.acquire() as conn:
        await files.complete(conn, place.objects, contract.FileQuery(by=user(by), file_id=file_id), now=at)
    return file_id


async def chunks_stored(place: Place, file_id: str, chunks: int) -> list[int]:
    """Which of the file's chunks the object store holds."""
    held = []
    for index in range(chunks):
        try:
            await place.objects.get(files.chunk_name(uuid.UUID(file_id), index))
        except files.ChunkMissing:
            continue
        held.append(index)
    return held


async def file_rows(place: Place) -> dict[str, str]:
    async with place.pool.acquire() as conn:
        return {str(r["id"]): r["status"] for r in await conn.fetch("SELECT id, status FROM files")}


async def remove_idle(place: Place, *, at: datetime) -> int:
    async with place.pool.acquire() as conn:
        return await files.remove_idle_uploads(conn, place.objects, now=at, idle_s=DAY_S)


async def test_an_upload_idle_for_a_day_goes_with_its_chunks_and_nothing_else_does(place: Place) -> None:
    data = os.urandom(2 * contract.CHUNK_BYTES + 10)  # three chunks
    idle = await start(place, data, at=T0)
    await send_chunk(place, idle, data, 0, at=T0)
    await send_chunk(place, idle, data, 2, at=T0 + timedelta(hours=1))
    busy = await start(place, data, at=T0)  # started as long ago, but a chunk came within the day
    await send_chunk(place, busy, data, 1, at=T0 + DAY)
    fresh = await start(place, data, at=T0 + DAY)  # no chunk yet, started within the day
    complete = await upload_whole(place, data, at=T0)

    later = T0 + DAY + timedelta(hours=2)
    assert await remove_idle(place, at=later) == 1
    assert await file_rows(place) == {busy: "uploading", fresh: "uploading", complete: "complete"}
    assert await chunks_stored(place, idle, 3) == []
    assert await chunks_stored(place, busy, 3) == [1]
    assert await chunks_stored(place, complete, 3) == [0, 1, 2]
    async with place.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM file_chunks WHERE file_id = $1", uuid.UUID(idle)) == 0
        assert await conn.fetchval("SELECT count(*) FROM file_removals") == 0
        with pytest.raises(MessagingError, match="no such file"):
            await files.get_file(conn, contract.FileQuery(by=user(ALICE), file_id=idle))
    with pytest.raises(MessagingError, match="no such file"):  # a late chunk finds nothing to join
        await send_chunk(place, idle, data, 1, at=later)
    assert await chunks_stored(place, idle, 3) == []
    assert await remove_idle(place, at=later) == 0  # again: nothing more


async def test_an_upload_that_starts_over_after_a_failed_completion_is_not_idle(place: Place) -> None:
    data = os.urandom(100)
    upload = contract.FileUploadRequest(name="f.bin", size=len(data), sha256=hashlib.sha256(b"other").hexdigest())
    command = contract.StartUploadCommand(by=user(ALICE), conversation_id=place.conversation, upload=upload)
    async with place.pool.acquire() as conn:
        file_id = (await files.start(conn, command, now=T0, open_max=16)).id
    await send_chunk(place, file_id, data, 0, at=T0 + timedelta(hours=30))
    async with place.pool.acquire() as conn:
        with pytest.raises(MessagingError, match="do not add up"):  # its chunks dropped: it starts over
            await files.complete(
                conn, place.objects, contract.FileQuery(by=user(ALICE), file_id=file_id), now=T0 + 2 * DAY
            )
    assert await remove_idle(place, at=T0 + 2 * DAY + timedelta(hours=1)) == 0  # started 2 days ago, over just now
    assert await remove_idle(place, at=T0 + 3 * DAY + timedelta(hours=1)) == 1


async def test_a_sweep_that_died_halfway_is_finished_by_the_next(place: Place) -> None:
    data = os.urandom(contract.CHUNK_BYTES + 1)
    idle = await start(place, data, at=T0)
    for index in (0, 1):
        await send_chunk(place, idle, data, index, at=T0)
    async with place.pool.acquire() as conn, conn.transaction():  # the first step alone, as if it died then
        assert await store.remove_idle_uploads(conn, T0 + timedelta(hours=1), T0 + DAY, 100) == 1
    assert await file_rows(place) == {}
    assert await chunks_stored(place, idle, 2) == [0, 1]  # still there, recorded for removal

    assert await remove_idle(place, at=T0 + DAY) == 0  # no upload left to remove, but the chunks go
    assert await chunks_stored(place, idle, 2) == []
    async with place.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM file_removals") == 0


async def test_an_upload_with_a_chunk_on_its_way_in_is_not_removed(place: Place) -> None:
    data = os.urandom(100)
    idle = await start(place, data, at=T0)
    async with place.pool.acquire() as chunk_in_flight, chunk_in_flight.transaction():
        # what put_chunk holds while it stores a chunk
        await chunk_in_flight.execute("SELECT 1 FROM files WHERE id = $1 FOR SHARE", uuid.UUID(idle))
        assert await remove_idle(place, at=T0 + 2 * DAY) == 0
    assert await remove_idle(place, at=T0 + 2 * DAY) == 1


async def test_the_uploader_cancels_an_upload_under_way_and_no_one_else_can(place: Place) -> None:
    data = os.urandom(100)
    cancelled = await start(place, data, at=T0)
    await send_chunk(place, cancelled, data, 0, at=T0)
    complete = await upload_whole(place, data, at=T0)
    async with place.pool.acquire() as conn:
        with pytest.raises(MessagingError, match="no such file"):  # not Bob's upload
            await files.remove(conn, contract.FileQuery(by=user(BOB), file_id=cancelled), now=T0)
        with pytest.raises(MessagingError, match="only the uploader"):  # Alice owns the group; Bob is a member
            await files.remove(conn, contract.FileQuery(by=user(BOB), file_id=complete), now=T0)
        gone = await files.remove(conn, contract.FileQuery(by=user(ALICE), file_id=cancelled), now=T0)
        assert (str(gone.file_id), gone.chunks, gone.what) == (cancelled, 1, "cancelled")
        assert await chunks_stored(place, cancelled, 1) == [0]  # recorded for removal, not removed yet
        await files.remove_chunks_of(conn, place.objects, gone.file_id, gone.chunks)
        assert await conn.fetchval("SELECT count(*) FROM file_removals") == 0
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE subject LIKE '%file.deleted%'") == 0
    assert await file_rows(place) == {complete: "complete"}
    assert await chunks_stored(place, cancelled, 1) == []
    assert await chunks_stored(place, complete, 1) == [0]


async def test_a_complete_file_is_deleted_with_its_chunks_and_a_download_under_way_answers_not_found(
    place: Place,
) -> None:
    """A download reads the file's row, then each chunk: a deletion that commits between takes the chunks."""
    data = os.urandom(100)
    complete = await upload_whole(place, data, at=T0)
    read = contract.ReadChunkQuery(by=user(BOB), file_id=complete, index=0)
    async with place.pool.acquire() as conn:
        assert base64.b64decode((await files.read_chunk(conn, place.objects, read)).data) == data
        await place.objects.delete(files.chunk_name(uuid.UUID(complete), 0))  # as the deletion does, row still read
        with pytest.raises(MessagingError, match="deleted") as refused:
            await files.read_chunk(conn, place.objects, read)
        assert refused.value.code == "not_found"
        gone = await files.remove(conn, contract.FileQuery(by=user(ALICE), file_id=complete), now=T0)
        assert (gone.what, await file_rows(place)) == ("deleted", {})
        await files.remove_chunks_of(conn, place.objects, gone.file_id, gone.chunks)  # gone already: nothing to do
        assert await conn.fetchval("SELECT count(*) FROM file_removals") == 0
        told = "SELECT count(*) FROM outbox WHERE subject = 'fog.evt.messaging.file.deleted.v1'"
        assert await conn.fetchval(told) == 1


async def test_a_member_has_at_most_open_max_uploads_under_way_even_when_starting_them_at_once(place: Place) -> None:
    data = os.urandom(100)

    async def try_start() -> str:
        try:
            return await start(place, data, at=T0, open_max=3)
        except MessagingError as refused:
            return refused.code

    outcomes = await asyncio.gather(*(try_start() for _ in range(8)))
    started = [outcome for outcome in outcomes if outcome != "too_many_uploads"]
    assert len(started) == 3
    assert await start(place, data, at=T0, by=BOB, open_max=3)  # each member counts their own
    await upload_whole_from(place, started[0], data)  # a complete one no longer counts
    assert await start(place, data, at=T0, open_max=3)
    with pytest.raises(MessagingError, match="3 uploads under way"):
        await start(place, data, at=T0, open_max=3)


async def upload_whole_from(place: Place, file_id: str, data: bytes) -> None:
    await send_chunk(place, file_id, data, 0, at=T0)
    async with place.pool.acquire() as conn:
        await files.complete(conn, place.objects, contract.FileQuery(by=user(ALICE), file_id=file_id), now=T0)


async def test_the_service_removes_idle_uploads_by_itself(place: Place, fog_servers: Servers) -> None:
    """The running service's sweep, with a second of idleness standing for the day."""
    data = os.urandom(100)
    idle = await start(place, data, at=datetime.now(UTC))
    await send_chunk(place, idle, data, 0, at=datetime.now(UTC))
    settings = settings_in_schema(
        Settings, place.db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(place.db.dsn),
        upload_idle_s=1.0, upload_sweep_every_s=0.1,
    )  # fmt: skip
    removed_before = removed_idle()
    app = build_app(settings)
    async with app.router.lifespan_context(app):

        async def gone() -> bool:
            counted = removed_idle() == removed_before + 1  # once the sweep is over
            return counted and idle not in await file_rows(place) and not await chunks_stored(place, idle, 1)

        await wait_until(gone, timeout=15, what="the idle upload and its chunk to be removed, and counted")


def removed_idle() -> float:
    return REGISTRY.get_sample_value("fog_messaging_uploads_removed_total", {"reason": "idle"}) or 0.0


async def test_a_member_keeps_at_most_bytes_max_of_files_and_deleting_one_frees_its_share(place: Place) -> None:
    data, limit = os.urandom(100), 250  # two files of 100 bytes fit, a third does not
    complete = await upload_whole(place, data, at=T0, bytes_max=limit)
    under_way = await start(place, data, at=T0, bytes_max=limit)  # counted as large as it will be
    with pytest.raises(MessagingError, match="your files take 200 bytes") as refused:
        await start(place, data, at=T0, bytes_max=limit)
    assert refused.value.code == "quota_exceeded"
    await start(place, data, at=T0, by=BOB, bytes_max=limit)  # Bob's share is his own
    async with place.pool.acquire() as conn:
        await files.remove(conn, contract.FileQuery(by=user(ALICE), file_id=under_way), now=T0)  # cancelled
    await start(place, data, at=T0, bytes_max=limit)
    async with place.pool.acquire() as conn:
        await files.remove(conn, contract.FileQuery(by=user(ALICE), file_id=complete), now=T0)  # deleted
    await start(place, data, at=T0, bytes_max=limit)


async def test_an_uploader_who_left_the_group_may_still_delete_their_file(place: Place) -> None:
    bobs = await upload_whole(place, os.urandom(100), at=T0, by=BOB)
    async with place.pool.acquire() as conn:
        leaving = contract.RemoveMemberCommand(by=user(BOB), conversation_id=place.conversation, member_id=BOB)
        await service.remove_member(conn, leaving, now=T0)
        with pytest.raises(MessagingError, match="no such file"):  # no longer his to read
            await files.get_file(conn, contract.FileQuery(by=user(BOB), file_id=bobs))
        gone = await files.remove(conn, contract.FileQuery(by=user(BOB), file_id=bobs), now=T0)
    assert (gone.what, await file_rows(place)) == ("deleted", {})
