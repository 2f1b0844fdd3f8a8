"""Real NATS and PostgreSQL servers survive a SIGKILL and come back with their data."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import nats
import pytest
from nats.js.api import StorageType

from fog_shared import devservers
from fog_shared.devservers import (
    NatsServer,
    Ports,
    PostgresServer,
    free_port,
    free_ports,
    wait_for_port,
)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer.on_free_ports(tmp_path / "nats")
    yield server
    server.stop()


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[PostgresServer]:
    server = PostgresServer(tmp_path / "pg", port=free_port())
    yield server
    server.stop()


def test_port_helpers() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        assert Ports().pick(busy) != busy
        wait_for_port("127.0.0.1", busy, timeout=2)
    idle = free_port()
    assert Ports().pick(idle) == idle
    with pytest.raises(TimeoutError, match=str(idle)):
        wait_for_port("127.0.0.1", idle, timeout=0.3)


def test_ports_chosen_together_are_never_the_same_one(monkeypatch: pytest.MonkeyPatch) -> None:
    assert len(set(free_ports(50))) == 50
    given = iter([7001, 7001, 7002])  # what two calls of free_port may give: the same port
    monkeypatch.setattr(devservers, "free_port", lambda host="127.0.0.1": next(given))
    ports = Ports()
    assert [ports.pick(), ports.pick()] == [7001, 7002]


async def _publish(url: str) -> int:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        await js.add_stream(name="DEVSERVERS", subjects=["devservers.>"], storage=StorageType.FILE)
        ack = await js.publish("devservers.probe", b"survives kill -9")
        return ack.seq
    finally:
        await nc.close()


async def _read(url: str, seq: int) -> tuple[int, bytes]:
    nc = await nats.connect(url, allow_reconnect=False)
    try:
        js = nc.jetstream()
        info = await js.stream_info("DEVSERVERS")
        msg = await js.get_msg("DEVSERVERS", seq)
        return info.state.messages, msg.data or b""
    finally:
        await nc.close()


def test_nats_jetstream_survives_kill(nats_server: NatsServer) -> None:
    nats_server.start()
    first_pid = nats_server.pid
    assert first_pid is not None
    assert nats_server.is_running()
    seq = asyncio.run(_publish(nats_server.url))

    nats_server.kill()
    assert not nats_server.is_running()
    assert nats_server.pid is None

    nats_server.start()
    assert nats_server.pid not in (None, first_pid)
    assert asyncio.run(_read(nats_server.url, seq)) == (1, b"survives kill -9")
    nats_server.stop()
    nats_server.stop()  # idempotent
    assert not nats_server.is_running()


def test_nats_start_failure_reports_log(tmp_path: Path) -> None:
    server = NatsServer.on_free_ports(tmp_path, extra_config="bogus {")
    with pytest.raises(RuntimeError, match="exited with code") as failure:
        server.start(timeout=10)
    assert "Parse error" in str(failure.value)  # the log tail explains why
    assert not server.is_running()


def test_start_refuses_a_busy_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = NatsServer(tmp_path, taken.getsockname()[1], free_port())
        with pytest.raises(OSError, match="already in use"):
            server.start()
    assert not server.is_running()


async def _write_row(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE probe (id int PRIMARY KEY, note text)")
        await conn.execute("INSERT INTO probe VALUES (1, 'survives kill -9')")
    finally:
        await conn.close()


async def _read_rows(dsn: str) -> list[tuple[int, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id, note FROM probe ORDER BY id")
        return [(row["id"], row["note"]) for row in rows]
    finally:
        await conn.close()


def test_postgres_survives_kill(pg_server: PostgresServer) -> None:
    pg_server.start()
    password = pg_server.password_file.read_text()
    assert pg_server.password_file.stat().st_mode & 0o777 == 0o600
    first_pid = pg_server.pid
    assert first_pid is not None
    asyncio.run(_write_row(pg_server.superuser_dsn))

    pg_server.kill()
    assert not pg_server.is_running()
    # The killed postmaster leaves its lock file behind; start() must cope.
    assert (pg_server.pgdata / "postmaster.pid").exists()

    pg_server.start()
    assert pg_server.pid not in (None, first_pid)
    assert pg_server.password_file.read_text() == password  # no second initdb
    assert asyncio.run(_read_rows(pg_server.superuser_dsn)) == [(1, "survives kill -9")]
    pg_server.stop()
    pg_server.stop()  # idempotent
    assert not pg_server.is_running()
    assert not (pg_server.pgdata / "postmaster.pid").exists()  # clean shutdown


def test_postgres_wrong_password_is_rejected(pg_server: PostgresServer) -> None:
    pg_server.start()
    with pytest.raises(asyncpg.InvalidPasswordError):
        asyncio.run(_read_rows(pg_server.dsn("postgres", "not-the-password")))


def test_postgres_long_data_dir_uses_short_socket_dir(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    server = PostgresServer(deep, port=free_port())
    try:
        server.start()
        socket_dir = server.socket_dir
        assert socket_dir != server.pgdata
        assert len(str(socket_dir / f".s.PGSQL.{server.port}")) <= 107
        assert (socket_dir / f".s.PGSQL.{server.port}").is_socket()
    finally:
        server.stop()
    assert not socket_dir.exists()  # stop() removes the tmp socket dir
