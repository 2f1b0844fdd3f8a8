"""A leader lock whose connection fails in any way gives the lead up and tries again on a new one."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from fog_shared.pg import leader
from fog_shared.pg.leader import LeaderLock


class _Connection:
    """Stands for an asyncpg connection: answers the lock query, or fails as told."""

    def __init__(self, failure: Exception | None = None) -> None:
        self.failure, self.terminated = failure, False

    def is_closed(self) -> bool:
        return self.terminated

    async def fetchval(self, query: str, *args: Any) -> bool:
        if self.failure is not None:
            raise self.failure
        return True

    async def close(self, timeout: float) -> None:
        if self.failure is not None:
            raise self.failure
        self.terminated = True

    def terminate(self) -> None:
        self.terminated = True


@pytest.mark.parametrize(
    "failure",
    [
        asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress"),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionResetError(),
    ],
    ids=["confused-after-a-crash", "closed", "gone", "reset"],
)
async def test_a_failing_lock_connection_means_not_leading_then_a_new_connection(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    broken, fresh = _Connection(failure), _Connection()
    connections = iter([broken, fresh])

    async def connect(dsn: str, schema: str) -> _Connection:
        return next(connections)

    monkeypatch.setattr(leader, "connect", connect)
    lock = LeaderLock("postgresql://db", "scheduler", "placement")

    assert await lock.try_acquire() is False
    assert broken.terminated, "the broken connection is dropped, and the lock with it"
    assert await lock.still_held() is False
    assert await lock.try_acquire() is True, "the next try connects anew"
    assert await lock.still_held() is True
