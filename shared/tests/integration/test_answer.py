"""A request's use case on a real pool: every way it can end is answered, none left for the caller's timeout."""

from __future__ import annotations

from typing import Any, ClassVar

import asyncpg
import pytest

from fog_shared.commands.common import Refusal, refusal_in
from fog_shared.runtime import ServiceRuntime
from fog_shared.settings import CommonSettings
from fog_shared.testing.plugin import Servers
from fog_shared.testing.waiting import wait_until


class _Settings(CommonSettings):
    service: ClassVar[str] = "answering"


@pytest.fixture
def runtime(consumer_pool: asyncpg.Pool) -> ServiceRuntime:
    runtime = ServiceRuntime(_Settings(), migrations_dir=None)
    runtime._pool = consumer_pool  # the pool a started runtime would have made
    return runtime


async def test_a_use_cases_result_and_refusal_are_its_reply(runtime: ServiceRuntime) -> None:
    async def count(conn: asyncpg.Connection) -> dict[str, Any]:
        return {"n": await conn.fetchval("SELECT 1")}

    async def refuse(conn: asyncpg.Connection) -> None:
        raise Refusal("not_found", "no such thing")

    assert await runtime.answer(count) == {"n": 1}
    refusal = refusal_in(await runtime.answer(refuse))
    assert refusal is not None
    assert (refusal.code, refusal.detail) == ("not_found", "no such thing")


async def test_a_bug_is_answered_as_an_internal_error_and_logged(
    runtime: ServiceRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    async def buggy(conn: asyncpg.Connection) -> None:
        await conn.execute("SELECT $1::text", "nul \x00 in text")  # PostgreSQL refuses it: a bug upstream

    refusal = refusal_in(await runtime.answer(buggy))
    assert refusal is not None
    assert refusal.code == "internal_error"
    assert "nul" not in refusal.detail, "what failed stays in the log, not in the reply"
    assert any(record.exc_info for record in caplog.records if "a request failed" in record.getMessage())


async def test_a_lost_database_connection_is_answered_as_unavailable(
    runtime: ServiceRuntime, fog_servers: Servers
) -> None:
    async def connection_killed(conn: asyncpg.Connection) -> None:
        admin = await asyncpg.connect(fog_servers.admin_dsn())
        try:
            pid = conn.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()

        async def dropped() -> bool:  # the client has seen the server close it
            try:
                return conn.is_closed()
            except asyncpg.InterfaceError:  # the pool took it back already
                return True

        await wait_until(dropped, timeout=10, what="the connection seen closed")
        await conn.fetchval("SELECT 1")

    refusal = refusal_in(await runtime.answer(connection_killed))
    assert refusal is not None
    assert refusal.code == "service_unavailable"
