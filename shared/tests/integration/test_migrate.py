"""The migration runner: forward-only, once each, under a lock, and checksummed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from fog_shared.pg.migrate import MigrationError, migrate, migrations_for, pending
from fog_shared.testing.plugin import ServiceDbFactory


def write(directory: Path, name: str, sql: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(sql)


async def test_concurrent_runs_apply_each_migration_once(service_db: ServiceDbFactory, tmp_path: Path) -> None:
    db = await service_db("scheduler")
    write(tmp_path, "0001_jobs.sql", "CREATE TABLE jobs (id int PRIMARY KEY);")
    write(tmp_path, "0002_more.sql", "ALTER TABLE jobs ADD COLUMN name text;")
    migrations = migrations_for(tmp_path, "scheduler")
    conns = [await asyncpg.connect(db.owner_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(*(migrate(c, db.schema, migrations) for c in conns))
        applied = sorted(m for result in results for m in result)
        assert applied == ["scheduler:0001_jobs", "scheduler:0002_more"]
        assert await pending(conns[0], migrations) == []
    finally:
        for conn in conns:
            await conn.close()


async def test_an_edited_applied_migration_is_refused(service_db: ServiceDbFactory, tmp_path: Path) -> None:
    db = await service_db("scheduler")
    write(tmp_path, "0001_jobs.sql", "CREATE TABLE jobs (id int PRIMARY KEY);")
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        await migrate(conn, db.schema, migrations_for(tmp_path, "scheduler"))
        write(tmp_path, "0001_jobs.sql", "CREATE TABLE jobs (id bigint PRIMARY KEY);")
        with pytest.raises(MigrationError, match="edited after it was applied"):
            await migrate(conn, db.schema, migrations_for(tmp_path, "scheduler"))
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_half_done(service_db: ServiceDbFactory, tmp_path: Path) -> None:
    db = await service_db("scheduler")
    write(tmp_path, "0001_bad.sql", "CREATE TABLE half (id int); SELECT no_such_function();")
    conn = await asyncpg.connect(db.owner_dsn)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await migrate(conn, db.schema, migrations_for(tmp_path, "scheduler"))
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert "scheduler:0001_bad" in await pending(conn, migrations_for(tmp_path, "scheduler"))
    finally:
        await conn.close()
