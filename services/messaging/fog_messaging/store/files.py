"""Files: their metadata and which chunks are in (the bytes live in the object store)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

FILE_COLUMNS = (
    "id, conversation_id, uploaded_by, name, size, sha256, chunk_size, chunks, status, created_at, completed_at"
)


async def insert_file(conn: asyncpg.Connection, values: dict[str, Any]) -> None:
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await conn.execute(
        f"INSERT INTO files ({', '.join(columns)}) VALUES ({placeholders})", *(values[c] for c in columns)
    )


async def file(conn: asyncpg.Connection, file_id: uuid.UUID, *, lock: bool = False) -> asyncpg.Record | None:
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(f"SELECT {FILE_COLUMNS} FROM files WHERE id = $1" + suffix, file_id)


async def uploads_of(conn: asyncpg.Connection, member: str) -> list[uuid.UUID]:
    """The ids of ``member``'s uploads under way, newest first."""
    rows = await conn.fetch(
        "SELECT id FROM files WHERE uploaded_by = $1 AND status = 'uploading' ORDER BY created_at DESC, id", member
    )
    return [row["id"] for row in rows]


async def complete_files(
    conn: asyncpg.Connection, conversation_id: uuid.UUID, *, before: tuple[datetime, uuid.UUID] | None, limit: int
) -> list[asyncpg.Record]:
    """The conversation's complete files, the last completed first, after ``before`` (a page's last row)."""
    newest_first = " ORDER BY completed_at DESC, id DESC"
    where = f"SELECT {FILE_COLUMNS} FROM files WHERE conversation_id = $1 AND status = 'complete'"
    rows: list[asyncpg.Record]
    if before is None:
        rows = await conn.fetch(where + newest_first + " LIMIT $2", conversation_id, limit)
    else:
        page = where + " AND (completed_at, id) < ($2, $3)" + newest_first + " LIMIT $4"
        rows = await conn.fetch(page, conversation_id, *before, limit)
    return rows


async def received_chunks(conn: asyncpg.Connection, file_id: uuid.UUID) -> list[int]:
    rows = await conn.fetch('SELECT "index" FROM file_chunks WHERE file_id = $1 ORDER BY "index"', file_id)
    return [r["index"] for r in rows]


async def record_chunk(conn: asyncpg.Connection, file_id: uuid.UUID, index: int, sha256: str, now: datetime) -> None:
    await conn.execute(
        'INSERT INTO file_chunks (file_id, "index", sha256, received_at) VALUES ($1, $2, $3, $4)'
        ' ON CONFLICT (file_id, "index") DO UPDATE SET sha256 = EXCLUDED.sha256, received_at = EXCLUDED.received_at',
        file_id,
        index,
        sha256,
        now,
    )


async def forget_chunks(conn: asyncpg.Connection, file_id: uuid.UUID, now: datetime) -> None:
    """The upload starts over: no chunk is kept, and it counts as active from ``now`` (not idle for want of them)."""
    await conn.execute("DELETE FROM file_chunks WHERE file_id = $1", file_id)
    await conn.execute("UPDATE files SET active_at = $2 WHERE id = $1", file_id, now)


async def mark_complete(conn: asyncpg.Connection, file_id: uuid.UUID, now: datetime) -> None:
    await conn.execute("UPDATE files SET status = 'complete', completed_at = $2 WHERE id = $1", file_id, now)


async def lock_uploads_of(conn: asyncpg.Connection, member: str) -> None:
    """Hold, until the transaction ends, the right to start an upload for ``member``."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended('fog.uploads:' || $1, 0))", member)


async def files_of(conn: asyncpg.Connection, member: str) -> tuple[int, int]:
    """What ``member`` holds: uploads started and not completed (nor cancelled or removed), and the bytes of all
    their files, complete and under way (as large as they announced themselves)."""
    row = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'uploading') AS open, coalesce(sum(size), 0) AS bytes"
        " FROM files WHERE uploaded_by = $1",
        member,
    )
    assert row is not None
    return int(row["open"]), int(row["bytes"])


#: after a CTE ``gone`` of deleted uploads (id, chunks): their chunks recorded for removal from the object store,
#: in the statement that deletes their rows, at ``$2``
_RECORD_REMOVALS = (
    "INSERT INTO file_removals (file_id, chunks, requested_at) SELECT id, chunks, $2 FROM gone"
    " ON CONFLICT (file_id) DO NOTHING"
)


async def remove_idle_uploads(conn: asyncpg.Connection, idle_since: datetime, now: datetime, limit: int) -> int:
    """Delete up to ``limit`` uploads that have had no chunk since ``idle_since`` (nor started, nor started over,
    after it), and record their chunks for removal from the object store (``file_removals``), in one statement:
    how many.

    An upload whose row a chunk or its completion holds locked is in use, and skipped."""
    status = await conn.execute(
        """
        WITH idle AS (
            SELECT f.id FROM files f
            WHERE f.status = 'uploading' AND f.active_at < $1
              AND NOT EXISTS (SELECT 1 FROM file_chunks c WHERE c.file_id = f.id AND c.received_at >= $1)
            ORDER BY f.active_at
            LIMIT $3
            FOR UPDATE SKIP LOCKED
        ), gone AS (
            DELETE FROM files f USING idle WHERE f.id = idle.id RETURNING f.id, f.chunks
        )
        """
        + _RECORD_REMOVALS,
        idle_since,
        now,
        limit,
    )
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 3"


async def remove_file(conn: asyncpg.Connection, file_id: uuid.UUID, now: datetime) -> None:
    """Delete one file's row (its chunks' rows go with it) and record its chunks for removal."""
    await conn.execute(
        "WITH gone AS (DELETE FROM files WHERE id = $1 RETURNING id, chunks) " + _RECORD_REMOVALS,
        file_id,
        now,
    )


async def pending_removals(conn: asyncpg.Connection, limit: int) -> list[tuple[uuid.UUID, int]]:
    """Files whose chunks are still to be deleted from the object store, oldest first."""
    rows = await conn.fetch("SELECT file_id, chunks FROM file_removals ORDER BY requested_at LIMIT $1", limit)
    return [(row["file_id"], row["chunks"]) for row in rows]


async def removal_done(conn: asyncpg.Connection, file_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM file_removals WHERE file_id = $1", file_id)
