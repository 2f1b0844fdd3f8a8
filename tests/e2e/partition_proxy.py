"""A TCP proxy in front of a gateway that can cut the line without closing it: a network partition.

While partitioned, nothing moves either way and new connections are held unanswered, as when packets are
lost on the way; no connection is closed, so neither end learns of it but by its own timeouts. Healed,
the held bytes flow again. Importable from the e2e tests (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit


class PartitionProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        """Listen on a free port of 127.0.0.1; the URL to give agents instead of the gateway's."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def partition(self) -> None:
        self._open.clear()

    def heal(self) -> None:
        self._open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._open.wait()  # a connection made during a partition gets no answer until it heals
            upstream_reader, upstream_writer = await asyncio.open_connection(self._host, self._port)
            await asyncio.gather(self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer))
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._tasks.discard(task)
            client_writer.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._open.wait()  # partitioned: read nothing, so nothing moves (TCP holds it)
                data = await reader.read(65536)
                if not data:
                    break
                await self._open.wait()  # cut while this was on its way: it waits too
                writer.write(data)
                await writer.drain()
        finally:
            with contextlib.suppress(OSError):
                writer.close()
