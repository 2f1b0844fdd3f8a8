"""Each service's login role can touch its own schema and nothing else."""

from __future__ import annotations

import asyncpg
import pytest

from fog_shared.testing.plugin import ServiceDbFactory


async def test_a_service_role_cannot_read_or_write_another_services_schema(service_db: ServiceDbFactory) -> None:
    a = await service_db("registry")
    b = await service_db("scheduler")
    conn = await asyncpg.connect(a.dsn)
    try:
        # Its own schema: rows in and out.
        await conn.execute("INSERT INTO inbox (consumer, event_id) VALUES ('c', 'e')")
        assert await conn.fetchval("SELECT count(*) FROM inbox") == 1
        # The other service's schema: neither read nor write, not even by qualified name.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f'SELECT * FROM "{b.schema}".outbox')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f"""INSERT INTO "{b.schema}".inbox (consumer, event_id) VALUES ('c', 'e')""")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f'CREATE TABLE "{b.schema}".intruder (id int)')
        # Nor can the runtime role change its own schema's shape: only migrations (the owner) do.
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE own_intruder (id int)")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CREATE TABLE public.intruder (id int)")
    finally:
        await conn.close()


async def test_owner_role_of_one_service_cannot_touch_another(service_db: ServiceDbFactory) -> None:
    a = await service_db("auth")
    b = await service_db("messaging")
    conn = await asyncpg.connect(a.owner_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.fetch(f'SELECT * FROM "{b.schema}".outbox')
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(f'DROP TABLE "{b.schema}".outbox')
    finally:
        await conn.close()
