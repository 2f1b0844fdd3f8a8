"""``fog-provision``: the setup Jobs of a cluster, against a real NATS and a real PostgreSQL."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest
from nats.js import JetStreamContext

from fog_shared.bus.topology import CONSUMERS, OBJECT_STORES, STREAMS
from fog_shared.pg.roles import ServiceDatabase
from fog_shared.provisioning import (
    DATABASE_SERVICES,
    DatabaseSettings,
    provision_databases,
    provision_streams,
    with_database,
)
from fog_shared.testing.plugin import Servers


async def test_streams_provisions_every_stream_and_consumer_and_can_run_again(
    fog_servers: Servers, jetstream: JetStreamContext
) -> None:
    for _ in range(2):  # a Job may run twice (a retried pod): the second run changes nothing
        await provision_streams(fog_servers.nats_url, replicas=1)
    object_stores = {f"OBJ_{bucket}" for bucket in OBJECT_STORES}  # each object store is a stream too
    assert {info.config.name for info in await jetstream.streams_info()} == {s.name for s in STREAMS} | object_stores
    for spec in CONSUMERS:
        info = await jetstream.consumer_info(spec.stream, spec.durable)
        assert info.config.filter_subjects == list(spec.filter_subjects)


@pytest.fixture
async def scratch_databases(fog_servers: Servers) -> AsyncIterator[tuple[str, list[ServiceDatabase]]]:
    """A database and roles of names no other test uses, dropped afterwards."""
    suffix = secrets.token_hex(4)
    database = f"fog_provision_{suffix}"
    dbs = [
        ServiceDatabase(svc, f"fog_{svc}_{suffix}", secrets.token_hex(8), f"fog_{svc}_{suffix}_owner", "o" + suffix)
        for svc in ("registry", "scheduler")
    ]
    yield database, dbs
    admin = await asyncpg.connect(fog_servers.admin_dsn("postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        for db in dbs:
            await admin.execute(f'DROP ROLE IF EXISTS "{db.role}"')
            await admin.execute(f'DROP ROLE IF EXISTS "{db.owner_role}"')
    finally:
        await admin.close()


async def test_database_creates_the_database_and_each_services_schema_and_roles(
    fog_servers: Servers, scratch_databases: tuple[str, list[ServiceDatabase]]
) -> None:
    database, dbs = scratch_databases
    admin_dsn = fog_servers.admin_dsn("postgres")
    for _ in range(2):
        await provision_databases(admin_dsn, database, dbs)
    for db in dbs:
        conn = await asyncpg.connect(fog_servers.dsn(db.role, db.password, database))
        try:
            assert await conn.fetchval("SELECT (current_schemas(false))[1]") == db.schema
        finally:
            await conn.close()


def test_database_settings_name_roles_as_the_dev_stack_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOG_PROVISION_DATABASE_URL", "postgresql://postgres:pw@postgres:5432/postgres")
    for svc in DATABASE_SERVICES:
        monkeypatch.setenv(f"FOG_PROVISION_{svc.upper()}_PASSWORD", f"{svc}-pw")
        monkeypatch.setenv(f"FOG_PROVISION_{svc.upper()}_OWNER_PASSWORD", f"{svc}-owner-pw")
    dbs = {db.schema: db for db in DatabaseSettings().service_databases()}
    assert set(dbs) == set(DATABASE_SERVICES)
    assert dbs["auth"] == ServiceDatabase("auth", "fog_auth", "auth-pw", "fog_auth_owner", "auth-owner-pw")


def test_with_database_keeps_user_host_and_options() -> None:
    dsn = "postgresql://postgres:s3cret@db.fog.svc:5432/postgres?sslmode=require"
    assert with_database(dsn, "fog") == "postgresql://postgres:s3cret@db.fog.svc:5432/fog?sslmode=require"
