"""One schema and two roles per service, with real GRANTs.

``<role>_owner`` owns the schema and runs migrations; ``<role>`` is the login the service runs
as: it may read and write rows in its own schema and nothing else, not even create tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class ServiceDatabase:
    schema: str
    role: str
    password: str
    owner_role: str
    owner_password: str


def _ident(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name[0].isalpha():
        raise ValueError(f"unsafe SQL identifier {name!r}")
    return f'"{name}"'


async def _ensure_role(conn: asyncpg.Connection, role: str, password: str) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    verb = "ALTER" if exists else "CREATE"
    # PASSWORD cannot be a bind parameter; quote_literal on the server keeps it safe.
    literal = await conn.fetchval("SELECT quote_literal($1)", password)
    await conn.execute(f"{verb} ROLE {_ident(role)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {literal}")


async def ensure_database(admin: asyncpg.Connection, database: str) -> None:
    if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
        await admin.execute(f"CREATE DATABASE {_ident(database)}")


async def provision_service(admin: asyncpg.Connection, database: str, db: ServiceDatabase) -> None:
    """Idempotently create ``db``'s roles and schema in ``database``; ``admin`` is connected to it."""
    role, owner, schema = _ident(db.role), _ident(db.owner_role), _ident(db.schema)
    await _ensure_role(admin, db.owner_role, db.owner_password)
    await _ensure_role(admin, db.role, db.password)
    statements = [
        f"REVOKE ALL ON DATABASE {_ident(database)} FROM PUBLIC",
        f"GRANT CONNECT, TEMPORARY ON DATABASE {_ident(database)} TO {role}, {owner}",
        "REVOKE ALL ON SCHEMA public FROM PUBLIC",
        f"CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {owner}",
        f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC",
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        f"ALTER ROLE {role} SET search_path = {schema}",
        f"ALTER ROLE {owner} SET search_path = {schema}",
    ]
    async with admin.transaction():
        # Serialise concurrent provisioning (two test workers, two dev stacks) on catalog rows.
        await admin.execute("SELECT pg_advisory_xact_lock(hashtext('fog.provision'))")
        for statement in statements:
            await admin.execute(statement)
