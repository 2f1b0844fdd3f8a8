"""Leadership among replicas: a session advisory lock on a dedicated connection.

The replica whose connection holds the lock leads; if it dies, Postgres drops the connection and
the lock with it, and the next replica to try takes over. Used where exactly one replica must act
(the registry's liveness, the scheduler's placement loop).
"""

from __future__ import annotations

import asyncpg

from fog_shared.pg.pool import connect

#: what a lock connection that died, or that its server left mid-reply, raises. Past a server crash,
#: asyncpg can refuse every later query on such a connection with an ``InternalClientError``
#: ("another operation is in progress"): uncaught, that ended the scheduler's placement loop for good.
CONNECTION_LOST = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


class LeaderLock:
    """A session advisory lock on a dedicated connection: held while that connection lives."""

    def __init__(self, dsn: str, schema: str, name: str) -> None:
        self.dsn, self.schema, self.name = dsn, schema, name
        self._conn: asyncpg.Connection | None = None

    async def try_acquire(self) -> bool:
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = await connect(self.dsn, self.schema)
            key = f"{self.schema}.{self.name}"  # per schema: test schemas side by side do not contend
            return bool(await self._conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", key))
        except CONNECTION_LOST:
            await self.release()  # the lock, if it was ours, goes with the connection: try again on a new one
            return False

    async def still_held(self) -> bool:
        try:
            return self._conn is not None and not self._conn.is_closed() and await self._conn.fetchval("SELECT true")
        except CONNECTION_LOST:
            return False

    async def release(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                await conn.close(timeout=2)
            except CONNECTION_LOST:
                conn.terminate()
