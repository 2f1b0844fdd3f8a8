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


async def received_chunks(conn: asyncpg.Connection, file_id: uuid.UUID) -> list[int]:
    rows = await conn.fetch('SELECT "index" FROM file_chunks WHERE file_id = $1 ORDER BY "index"', file_id)
    return [r["index"] for r in rows]


async def record_chunk(conn: asyncpg.Connection, file_id: uuid.UUID, index: int, sha256: str) -> None:
    await conn.execute(
        'INSERT INTO file_chunks (file_id, "index", sha256) VALUES ($1, $2, $3)'
        ' ON CONFLICT (file_id, "index") DO UPDATE SET sha256 = EXCLUDED.sha256',
        file_id,
        index,
        sha256,
    )


async def forget_chunks(conn: asyncpg.Connection, file_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM file_chunks WHERE file_id = $1", file_id)


async def mark_complete(conn: asyncpg.Connection, file_id: uuid.UUID, now: datetime) -> None:
    await conn.execute("UPDATE files SET status = 'complete', completed_at = $2 WHERE id = $1", file_id, now)
