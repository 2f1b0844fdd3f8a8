"""Files: sent in chunks (each checked against its SHA-256, resumable: only missing chunks are
sent again), checked whole at the end, then fetched chunk by chunk by the conversation's members.

The bytes live in the JetStream object store, one object per chunk, so a download can start at
any chunk (HTTP Range) and nothing holds a whole file in memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

import asyncpg

from fog_messaging import domain, store
from fog_messaging.domain import Rejected
from fog_messaging.service.common import SOURCE, MessagingError, conversation_uuid, member_of, refusal
from fog_shared.commands import messaging as contract
from fog_shared.events.messaging import FileDeleted, FileUploaded
from fog_shared.paging import InvalidCursor, decode_cursor, encode_cursor
from fog_shared.pg import outbox


class ChunkMissing(LookupError):
    """No such object: its file was deleted meanwhile."""


class Objects(Protocol):
    """Where file chunks are kept (the JetStream object store)."""

    async def put(self, name: str, data: bytes) -> None: ...

    async def get(self, name: str) -> bytes:
        """The object's bytes; :class:`ChunkMissing` when it is not there."""

    async def delete(self, name: str) -> None:
        """Remove the object, if it is there."""


def chunk_name(file_id: uuid.UUID, index: int) -> str:
    return f"{file_id}/{index}"


def _file_uuid(file_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(file_id)
    except ValueError:
        raise MessagingError("not_found", "no such file") from None


def _no_file() -> MessagingError:
    return MessagingError("not_found", "no such file")


async def start(
    conn: asyncpg.Connection,
    command: contract.StartUploadCommand,
    *,
    now: datetime,
    open_max: int,
    bytes_max: int = domain.FILES_BYTES_MAX,
) -> contract.FileView:
    """Announce a file to a conversation you are in; then send its chunks. A member has at most ``open_max``
    uploads under way: each may hold up to 64 MiB of the object store until it completes, is cancelled, or is
    removed for want of chunks. And a member keeps at most ``bytes_max`` bytes of files, counting this one."""
    me, conversation_id, upload = member_of(command.by), conversation_uuid(command.conversation_id), command.upload
    if me not in await store.members(conn, conversation_id):
        raise MessagingError("not_found", "no such conversation")
    file_id = uuid.uuid4()
    values = {
        "id": file_id, "conversation_id": conversation_id, "uploaded_by": me, "name": upload.name,
        "size": upload.size, "sha256": upload.sha256, "chunk_size": contract.CHUNK_BYTES,
        "chunks": domain.chunk_count(upload.size, contract.CHUNK_BYTES), "status": "uploading", "created_at": now,
        "active_at": now,
    }  # fmt: skip
    async with conn.transaction():
        await store.lock_uploads_of(conn, me)  # two starts at once count each other
        open_uploads, kept_bytes = await store.files_of(conn, me)
        if open_uploads >= open_max:
            raise MessagingError(
                "too_many_uploads",
                f"you have {open_max} uploads under way: complete one, or cancel one (DELETE /v1/files/{{id}}) first",
            )
        try:
            domain.check_quota(kept_bytes, upload.size, bytes_max)
        except Rejected as rejected:
            raise refusal(rejected) from None
        await store.insert_file(conn, values)
    return await _view(conn, file_id)


async def put_chunk(
    conn: asyncpg.Connection, objects: Objects, command: contract.ChunkCommand, *, now: datetime
) -> contract.FileView:
    """Store one chunk of your upload; sending a chunk again replaces it."""
    me, file_id = member_of(command.by), _file_uuid(command.file_id)
    try:
        data = base64.b64decode(command.data, validate=True)
    except (binascii.Error, ValueError):
        raise MessagingError("invalid_chunk", "a chunk's data is base64") from None
    async with conn.transaction():
        # FOR SHARE: chunks go in side by side, but not while the upload is being completed
        row = await conn.fetchrow("SELECT * FROM files WHERE id = $1 FOR SHARE", file_id)
        if row is None or row["uploaded_by"] != me:
            raise _no_file()
        if row["status"] == "complete":
            raise MessagingError("complete", "the file is complete; it takes no more chunks")
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            domain.check_chunk(row["size"], command.index, row["chunk_size"], len(data), command.sha256, sha256)
        except Rejected as rejected:
            raise refusal(rejected) from None
        await objects.put(chunk_name(file_id, command.index), data)
        await store.record_chunk(conn, file_id, command.index, sha256, now)
    return await _view(conn, file_id)


async def complete(
    conn: asyncpg.Connection, objects: Objects, query: contract.FileQuery, *, now: datetime
) -> contract.FileView:
    """Check the whole file against its SHA-256 and make it fetchable (``file.uploaded``). A
    mismatch drops the chunks: the upload starts over."""
    me, file_id = member_of(query.by), _file_uuid(query.file_id)
    async with conn.transaction():
        row = await store.file(conn, file_id, lock=True)
        if row is None or row["uploaded_by"] != me:
            raise _no_file()
        if row["status"] == "complete":
            return await _view(conn, file_id)
        missing = domain.missing_chunks(row["chunks"], await store.received_chunks(conn, file_id))
        if missing:
            shown = ", ".join(map(str, missing[:20])) + (", …" if len(missing) > 20 else "")
            raise MessagingError("incomplete", f"{len(missing)} chunks missing: {shown}")
        matches = await _whole_file_sha256(objects, file_id, row["chunks"]) == row["sha256"]
        if matches:
            await _publish(conn, row, now)
        else:
            await store.forget_chunks(conn, file_id, now)
    if not matches:
        raise MessagingError("checksum_mismatch", "the chunks do not add up to the file's SHA-256; send them again")
    return await _view(conn, file_id)


@dataclass(frozen=True, slots=True)
class Removed:
    """A file gone from the database, whose chunks are still to leave the object store (``remove_chunks_of``)."""

    file_id: uuid.UUID
    chunks: int
    #: an upload under way, cancelled; or a complete file, deleted
    what: Literal["cancelled", "deleted"]


async def remove(conn: asyncpg.Connection, query: contract.FileQuery, *, now: datetime) -> Removed:
    """Cancel an upload under way (its uploader alone), or delete a complete file (its uploader, or a group's owner
    or admins, as for messages): its members are told (``file.deleted``, a ``file_deleted`` entry in their
    timelines), and it can no longer be fetched. Its chunks are left for ``remove_chunks_of`` (or the next
    ``remove_chunks``)."""
    me, file_id = member_of(query.by), _file_uuid(query.file_id)
    async with conn.transaction():
        row = await store.file(conn, file_id, lock=True)  # waits for chunks on their way in
        if row is None:
            raise _no_file()
        if row["status"] != "complete":
            if row["uploaded_by"] != me:
                raise _no_file()
            await store.remove_file(conn, file_id, now)
            return Removed(file_id, row["chunks"], "cancelled")
        roster = await store.members(conn, row["conversation_id"])
        if me not in roster and me != row["uploaded_by"]:  # an uploader who left may still delete theirs
            raise _no_file()
        if not domain.may_delete(me, roster.get(me), row["uploaded_by"]):
            raise MessagingError("forbidden", "only the uploader, or a group's owner or admins, delete a file")
        await store.remove_file(conn, file_id, now)
        await _tell_deleted(conn, row, list(roster), me, now)
    return Removed(file_id, row["chunks"], "deleted")


async def _tell_deleted(conn: asyncpg.Connection, row: Any, audience: list[str], by: str, now: datetime) -> None:
    event = FileDeleted(
        file_id=str(row["id"]), conversation_id=str(row["conversation_id"]), uploaded_by=row["uploaded_by"],
        deleted_by=by, audience=audience, deleted_at=now,
    )  # fmt: skip
    await outbox.record(conn, event, source=SOURCE)
    await store.append_timeline(conn, audience, row["conversation_id"], "file_deleted", payload=_summary(row), now=now)


async def remove_idle_uploads(
    conn: asyncpg.Connection, objects: Objects, *, now: datetime, idle_s: float, batch: int = 100
) -> int:
    """Remove every upload that has had no chunk for ``idle_s`` seconds (nor started within them), and remove
    their chunks from the object store: how many. Any replica may run it at any time: a row is removed once,
    and removing chunks again removes nothing."""
    idle_since, removed = now - timedelta(seconds=idle_s), 0
    while True:
        async with conn.transaction():
            found = await store.remove_idle_uploads(conn, idle_since, now, batch)
        removed += found
        if found < batch:
            break
    await remove_chunks(conn, objects)
    return removed


async def remove_chunks(conn: asyncpg.Connection, objects: Objects, batch: int = 100) -> int:
    """Delete from the object store the chunks of every upload removed (``file_removals``), then forget each
    removal: how many files. A process that dies on the way leaves the rest to the next call."""
    removed = 0
    while pending := await store.pending_removals(conn, batch):
        for file_id, chunks in pending:
            await remove_chunks_of(conn, objects, file_id, chunks)
        removed += len(pending)
    return removed


async def remove_chunks_of(conn: asyncpg.Connection, objects: Objects, file_id: uuid.UUID, chunks: int) -> None:
    """Delete one removed upload's chunks from the object store, then forget its removal."""
    for index in range(chunks):
        await objects.delete(chunk_name(file_id, index))
    await store.removal_done(conn, file_id)


async def _whole_file_sha256(objects: Objects, file_id: uuid.UUID, chunks: int) -> str:
    whole = hashlib.sha256()
    for index in range(chunks):
        whole.update(await objects.get(chunk_name(file_id, index)))
    return whole.hexdigest()


async def _publish(conn: asyncpg.Connection, row: Any, now: datetime) -> None:
    await store.mark_complete(conn, row["id"], now)
    audience = list(await store.members(conn, row["conversation_id"]))
    event = FileUploaded(
        file_id=str(row["id"]), conversation_id=str(row["conversation_id"]), uploaded_by=row["uploaded_by"],
        name=row["name"], size=row["size"], sha256=row["sha256"], audience=audience, uploaded_at=now,
    )  # fmt: skip
    await outbox.record(conn, event, source=SOURCE)
    await store.append_timeline(conn, audience, row["conversation_id"], "file", payload=_summary(row), now=now)


def _summary(row: Any) -> dict[str, Any]:
    """The file as a timeline entry shows it (``FileSummary``)."""
    return {"id": str(row["id"]), "name": row["name"], "size": row["size"], "sha256": row["sha256"],
            "uploaded_by": row["uploaded_by"]}  # fmt: skip


async def get_file(conn: asyncpg.Connection, query: contract.FileQuery) -> contract.FileView:
    await _readable(conn, member_of(query.by), _file_uuid(query.file_id))
    return await _view(conn, _file_uuid(query.file_id))


async def list_uploads(conn: asyncpg.Connection, query: contract.ByQuery) -> contract.UploadList:
    """Your uploads under way (at most ``uploads_open_max``), newest first, each with the chunks it misses."""
    me = member_of(query.by)
    return contract.UploadList(items=[await _view(conn, file_id) for file_id in await store.uploads_of(conn, me)])


async def list_files(conn: asyncpg.Connection, query: contract.ListFilesQuery) -> contract.FilePage:
    """A conversation's complete files, the last completed first, for its members (others: no such conversation)."""
    conversation_id = conversation_uuid(query.conversation_id)
    if member_of(query.by) not in await store.members(conn, conversation_id):
        raise MessagingError("not_found", "no such conversation")
    try:
        before = decode_cursor(query.cursor) if query.cursor else None
    except InvalidCursor as exc:
        raise MessagingError("invalid_cursor", str(exc)) from None
    rows = await store.complete_files(conn, conversation_id, before=before, limit=query.limit + 1)
    page = rows[: query.limit]
    more = len(rows) > query.limit
    return contract.FilePage(
        items=[_view_of(row, missing=[]) for row in page],
        next_cursor=encode_cursor(page[-1]["completed_at"], page[-1]["id"]) if more else None,
    )


async def read_chunk(conn: asyncpg.Connection, objects: Objects, query: contract.ReadChunkQuery) -> contract.ChunkData:
    """One chunk of a complete file, for the conversation's members only."""
    file_id = _file_uuid(query.file_id)
    row = await _readable(conn, member_of(query.by), file_id)
    if row["status"] != "complete":
        raise MessagingError("not_found", "the file is not uploaded yet")
    if query.index >= row["chunks"]:
        raise MessagingError("invalid_chunk", f"the file has chunks 0 to {row['chunks'] - 1}")
    try:
        data = await objects.get(chunk_name(file_id, query.index))
    except ChunkMissing:  # deleted since the row was read
        raise MessagingError("not_found", "the file was deleted") from None
    return contract.ChunkData(index=query.index, data=base64.b64encode(data).decode())


async def _readable(conn: asyncpg.Connection, me: str, file_id: uuid.UUID) -> Any:
    """The file's row, if ``me`` is a member of its conversation now (else it looks like none)."""
    row = await store.file(conn, file_id)
    if row is None or me not in await store.members(conn, row["conversation_id"]):
        raise _no_file()
    return row


async def _view(conn: asyncpg.Connection, file_id: uuid.UUID) -> contract.FileView:
    row = await store.file(conn, file_id)
    assert row is not None
    missing = domain.missing_chunks(row["chunks"], await store.received_chunks(conn, file_id))
    return _view_of(row, missing=[] if row["status"] == "complete" else missing)


def _view_of(row: Any, *, missing: list[int]) -> contract.FileView:
    return contract.FileView(
        id=str(row["id"]), conversation_id=str(row["conversation_id"]), name=row["name"], size=row["size"],
        sha256=row["sha256"], chunk_size=row["chunk_size"], chunks=row["chunks"], missing=missing,
        status=row["status"], uploaded_by=row["uploaded_by"], created_at=row["created_at"],
        completed_at=row["completed_at"],
    )  # fmt: skip
