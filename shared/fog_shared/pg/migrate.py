"""Forward-only SQL migrations, applied under an advisory lock, with checksums.

Every service schema gets Fog's platform tables first (``fog_shared/pg/migrations``: outbox,
inbox), then the service's own ``fog_<svc>/migrations/NNNN_name.sql``. Each file runs in its
own transaction; an applied file whose text changed is an error, never silently re-run.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

log = logging.getLogger(__name__)

PLATFORM_MIGRATIONS = Path(__file__).parent / "migrations"


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Migration:
    id: str  # "<source>:<file stem>", e.g. "fog_shared:0001_outbox_inbox"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(source: str, directory: Path) -> list[Migration]:
    return [Migration(f"{source}:{path.stem}", path.read_text()) for path in sorted(directory.glob("*.sql"))]


def migrations_for(service_dir: Path, service: str) -> list[Migration]:
    return load_migrations("fog_shared", PLATFORM_MIGRATIONS) + load_migrations(service, service_dir)


async def applied_migrations(conn: asyncpg.Connection) -> dict[str, str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT id, checksum FROM schema_migrations")
    return {row["id"]: row["checksum"] for row in rows}


async def migrate(conn: asyncpg.Connection, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply what is missing; returns the ids applied. ``conn`` is the schema owner's."""
    await conn.execute(f'SET search_path = "{schema}"')
    await conn.execute("SELECT pg_advisory_lock(hashtext('fog.migrate.' || $1))", schema)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " id text PRIMARY KEY, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = await applied_migrations(conn)
        _check_unchanged(migrations, applied)
        done = []
        for migration in migrations:
            if migration.id in applied:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (id, checksum) VALUES ($1, $2)", migration.id, migration.checksum
                )
            log.info("migration applied", extra={"migration": migration.id, "schema": schema})
            done.append(migration.id)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext('fog.migrate.' || $1))", schema)


def _check_unchanged(migrations: list[Migration], applied: dict[str, str]) -> None:
    known = {m.id: m for m in migrations}
    for migration_id, checksum in applied.items():
        migration = known.get(migration_id)
        if migration is None:
            raise MigrationError(f"database has migration {migration_id} that this code does not know")
        if migration.checksum != checksum:
            raise MigrationError(f"migration {migration_id} was edited after it was applied: add a new one")


async def pending(conn: asyncpg.Connection, migrations: list[Migration]) -> list[str]:
    """Ids not yet applied (readiness reports not-ready while any are pending)."""
    applied = await applied_migrations(conn)
    return [m.id for m in migrations if m.id not in applied]
