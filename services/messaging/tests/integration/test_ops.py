"""A service process's ops routes: health, readiness (NATS, Postgres, migrations), metrics, AsyncAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from fog_messaging.app import MIGRATIONS, build_app
from fog_messaging.config import Settings
from fog_shared.bus.topology import Topology
from fog_shared.testing.plugin import Provisioner, Servers, ServiceDb, ServiceDbFactory, settings_in_schema


async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
            yield client


def settings_for(fog_servers: Servers, db: ServiceDb) -> Settings:
    return settings_in_schema(Settings, db.schema, nats_url=fog_servers.nats_url, database_url=SecretStr(db.dsn))


@pytest.fixture
async def migrated(
    fog_servers: Servers, service_db: ServiceDbFactory, provision_topology: Provisioner
) -> AsyncIterator[httpx.AsyncClient]:
    await provision_topology(Topology())
    db = await service_db("messaging", MIGRATIONS)
    async for client in serve(build_app(settings_for(fog_servers, db))):
        yield client


@pytest.fixture
async def unmigrated(
    fog_servers: Servers, service_db: ServiceDbFactory, provision_topology: Provisioner
) -> AsyncIterator[httpx.AsyncClient]:
    await provision_topology(Topology())
    db = await service_db("messaging", Path("/nonexistent"))  # platform tables only
    async for client in serve(build_app(settings_for(fog_servers, db))):
        yield client


async def test_ready_when_nats_postgres_and_migrations_are(migrated: httpx.AsyncClient) -> None:
    assert (await migrated.get("/healthz")).json() == {"status": "ok", "service": "messaging"}
    ready = await migrated.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": "ok", "background_tasks": "ok", "postgres": "ok", "migrations": "ok"}
    metrics = (await migrated.get("/metrics")).text
    assert "fog_outbox_pending" in metrics
    asyncapi = (await migrated.get("/asyncapi.json")).json()
    assert asyncapi["asyncapi"].startswith("3.")
    consumed = {c["durable"] for c in asyncapi["x-fog-consumes"]}
    assert consumed == {"messaging__users", "messaging__node_owners"}


async def test_not_ready_while_migrations_are_pending(unmigrated: httpx.AsyncClient) -> None:
    ready = await unmigrated.get("/readyz")
    assert ready.status_code == 503
    migrations = (
        "0001_users", "0002_conversations", "0003_keys", "0004_files", "0005_abandoned_uploads", "0006_signed_prekeys",
        "0007_files_by_uploader",
        "0008_complete_files_by_conversation",
        "0009_users_by_email",
    )  # fmt: skip
    pending = "pending: " + ", ".join(f"messaging:{name}" for name in migrations)
    assert ready.json()["checks"]["migrations"] == pending
