"""ServiceRuntime: the connections, background loops and HTTP app of one service process.

A service's ``app.py`` creates one, registers its request handlers on ``runtime.broker`` and its
event consumers, and returns ``runtime.http_app()``; uvicorn runs that app, and its lifespan
starts and stops everything in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIServer

import asyncpg
import nats
from fastapi import FastAPI
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext
from prometheus_client import start_http_server
from pydantic import BaseModel

from fog_shared.bus.broker import make_broker
from fog_shared.bus.consumer import BatchHandler, EventConsumer, Handler
from fog_shared.bus.topology import ConsumerSpec, event_stream_name
from fog_shared.commands.common import Refusal, error
from fog_shared.commands.status import ReplicaStatus
from fog_shared.pg.housekeeping import run_housekeeping
from fog_shared.pg.migrate import Migration, migrations_for, pending
from fog_shared.pg.outbox import OutboxRelay
from fog_shared.pg.pool import create_pool
from fog_shared.runtime.ops import add_ops_routes
from fog_shared.settings import CommonSettings
from fog_shared.subjects import inbox_prefix, query_subject
from fog_shared.telemetry import configure_tracing
from fog_shared.telemetry.http_metrics import HttpMetricsMiddleware
from fog_shared.telemetry.metrics import BACKGROUND_TASK_DEAD

log = logging.getLogger(__name__)
#: what a request's use case fails with when the database is down, restarting or full, not when it has a bug.
#: A connection the server dropped mid-request surfaces as an ``InterfaceError`` from the pool.
_DATABASE_OUT_OF_REACH = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
)  # fmt: skip
#: how long a stopping service waits for a cancelled loop before cancelling it again
CANCEL_AGAIN_AFTER_S = 1.0
#: this process, as its status names it: the host (a pod's name on Kubernetes) and the process id
REPLICA = f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class Consumer:
    spec: ConsumerSpec
    handler: Handler | None = None
    batch_handler: BatchHandler | None = None


class ServiceRuntime:
    def __init__(
        self,
        settings: CommonSettings,
        *,
        migrations_dir: Path | None,
        uses_database: bool = True,
        publishes_events: bool = True,
    ) -> None:
        self.settings = settings
        self.service = settings.service
        self.uses_database = uses_database
        self.publishes_events = publishes_events and uses_database
        self.migrations: list[Migration] = (
            migrations_for(migrations_dir, self.service) if uses_database and migrations_dir else []
        )
        self.broker = make_broker(settings.nats_url, self.service)
        self.consumers: list[Consumer] = []
        self._pool: asyncpg.Pool | None = None
        self._nc: NatsClient | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._metrics_server: WSGIServer | None = None
        #: the background tasks that ended while the service ran, by name: what ended each, in a word
        self.dead_tasks: dict[str, str] = {}
        self._migrations_done = False
        self._start_hooks: list[Callable[[], Awaitable[None]]] = []
        self._background: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._after_start_hooks: list[Callable[[], Awaitable[None]]] = []
        self._facts: dict[str, Callable[[], bool | int | str]] = {}
        self._register_status_query()

    # -- what services use -------------------------------------------------------------
    def consume(self, spec: ConsumerSpec, handler: Handler) -> None:
        self.consumers.append(Consumer(spec, handler=handler))

    def consume_batches(self, spec: ConsumerSpec, handler: BatchHandler) -> None:
        """As ``consume``, with each fetched batch handed to ``handler`` at once (``EventConsumer``)."""
        self.consumers.append(Consumer(spec, batch_handler=handler))

    def on_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` once NATS and Postgres are connected, before request handlers answer."""
        self._start_hooks.append(hook)

    def after_start(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` once request handlers answer (it may make requests itself)."""
        self._after_start_hooks.append(hook)

    async def answer(self, use_case: Callable[[asyncpg.Connection], Awaitable[Any]]) -> dict[str, Any]:
        """Run one request's use case on a pooled connection and make its reply: a model's JSON,
        a dict as it is, nothing as ``{}``, and a :class:`Refusal` as the error reply.

        Anything else that goes wrong is answered too, as ``service_unavailable`` when the database
        is out of reach and ``internal_error`` otherwise (logged with its traceback): a caller learns
        at once, instead of waiting out its timeout for a reply that never comes.
        """
        try:
            async with self.pool.acquire() as conn:
                result = await use_case(conn)
        except Refusal as refused:
            return refused.reply()
        except _DATABASE_OUT_OF_REACH:
            log.warning("%s: a request failed on its database connection", self.service, exc_info=True)
            return error("service_unavailable", "the service cannot reach its database; try again")
        except Exception:
            log.exception("%s: a request failed", self.service)
            return error("internal_error", "the service failed on this request; it is logged")
        if isinstance(result, BaseModel):
            dumped: dict[str, Any] = result.model_dump(mode="json")
            return dumped
        return dict(result or {})

    def in_background(self, name: str, loop: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``loop()`` as a task once the service has started; it is cancelled at stop."""
        self._background.append((name, loop))

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the database pool exists only while the service runs")
        return self._pool

    @property
    def nc(self) -> NatsClient:
        """The raw NATS client (events, and the core pushes of :mod:`fog_shared.bus.push`), while running."""
        if self._nc is None:
            raise RuntimeError("NATS is connected only while the service runs")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        return self.nc.jetstream()

    def report_in_status(self, fact: str, value: Callable[[], bool | int | str]) -> None:
        """Say ``fact`` of this replica in its status (``leads_placement``, say): what sets replicas apart."""
        self._facts[fact] = value

    async def status(self) -> ReplicaStatus:
        """This replica: which it is, whether its dependencies and background tasks are in order, its facts."""
        facts = {fact: value() for fact, value in self._facts.items()}
        return ReplicaStatus(service=self.service, replica=REPLICA, checks=await self.readiness(), facts=facts)

    def _register_status_query(self) -> None:
        # Outside the queue group: every replica answers, and one request hears them all (fog_shared.commands.status).
        @self.broker.subscriber(query_subject(self.service, "status"), title=f"{self.service} status")
        async def status() -> dict[str, Any]:
            """This replica: whether its dependencies and background tasks are in order, and what it leads."""
            return (await self.status()).model_dump(mode="json")

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        configure_tracing(self.service, self.settings.otlp_endpoint)
        if self.uses_database:
            self._pool = await create_pool(
                self.settings.database_url.get_secret_value(),
                self.settings.db_schema,
                min_size=self.settings.db_pool_min,
                max_size=self.settings.db_pool_max,
            )
        self._nc = await nats.connect(
            self.settings.nats_url,
            name=f"fog-{self.service}-events",
            inbox_prefix=inbox_prefix(self.service),
            max_reconnect_attempts=-1,
        )
        for hook in self._start_hooks:
            await hook()
        await self.broker.start()
        for hook in self._after_start_hooks:
            await hook()
        if self.publishes_events:
            relay = OutboxRelay(
                dsn=self.settings.database_url.get_secret_value(),
                schema=self.settings.db_schema,
                nc=self._nc,
                stream=event_stream_name(self.service),
                batch_size=self.settings.outbox_batch_size,
                poll_interval_s=self.settings.outbox_poll_interval_s,
            )
            self._spawn(relay.run(), "outbox-relay")
        if self.uses_database:
            housekeeping = run_housekeeping(
                self.pool,
                every_s=self.settings.housekeeping_interval_s,
                outbox_keep_s=self.settings.outbox_keep_s,
                inbox_keep_s=self.settings.inbox_keep_s,
            )
            self._spawn(housekeeping, "housekeeping")
        for name, loop in self._background:
            self._spawn(loop(), name)
        for consumer in self.consumers:
            engine = EventConsumer(
                spec=consumer.spec, handler=consumer.handler, batch_handler=consumer.batch_handler, pool=self.pool,
                js=self.js,
            )  # fmt: skip
            self._spawn(engine.run(), f"consumer-{consumer.spec.durable}")
        if self.settings.metrics_port is not None:  # last: a start that failed before leaves no server behind
            self._metrics_server, _ = start_http_server(self.settings.metrics_port, addr=self.settings.http_host)
            log.info("metrics served on a port of their own", extra={"metrics_url": self.metrics_url})
        log.info("service started", extra={"service": self.service})

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._on_task_done)
        self._tasks.append(task)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """Every background task runs for as long as the service does: one that ends before the stop,
        whatever ended it, leaves the process unable to do part of its work, and says so on
        ``/healthz`` (the liveness probe: Kubernetes restarts it), ``/readyz`` and ``/metrics``."""
        if self._stopping:
            return
        name, exc = task.get_name(), None if task.cancelled() else task.exception()
        self.dead_tasks[name] = _how_it_ended(task, exc)
        BACKGROUND_TASK_DEAD.labels(self.service, name).set(1)
        log.error(
            "background task ended while the service runs; /healthz fails until the process restarts",
            exc_info=exc, extra={"task": name, "ended": self.dead_tasks[name]},
        )  # fmt: skip

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await _until_cancelled(task)
        self._tasks.clear()
        await self.broker.stop()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.drain()
            self._nc = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)  # waits for its thread's loop to end
            self._metrics_server.server_close()
            self._metrics_server = None
        log.info("service stopped", extra={"service": self.service})

    @property
    def metrics_url(self) -> str | None:
        """Where ``/metrics`` is served apart from the HTTP port, while the service runs (``metrics_port``)."""
        if self._metrics_server is None:
            return None
        return f"http://{self.settings.http_host}:{self._metrics_server.server_port}/metrics"

    # -- readiness ------------------------------------------------------------------------
    async def readiness(self) -> dict[str, str]:
        """Each dependency's state; the service is ready when every value is ``"ok"``."""
        checks = {"nats": "ok" if self._nc is not None and self._nc.is_connected else "disconnected"}
        checks["background_tasks"] = "ok" if not self.dead_tasks else "ended: " + ", ".join(sorted(self.dead_tasks))
        if self.uses_database:
            checks["postgres"], checks["migrations"] = await self._database_readiness()
        return checks

    async def _database_readiness(self) -> tuple[str, str]:
        try:
            async with self.pool.acquire(timeout=2) as conn:
                if self._migrations_done:
                    await conn.fetchval("SELECT 1")
                    return "ok", "ok"
                missing = await pending(conn, self.migrations)
        except Exception as exc:
            return f"unreachable: {type(exc).__name__}", "unknown"
        self._migrations_done = not missing
        return "ok", "ok" if not missing else f"pending: {', '.join(missing)}"

    # -- HTTP -----------------------------------------------------------------------------
    def http_app(self, app: FastAPI | None = None) -> FastAPI:
        """The process's HTTP app: ``app`` (the gateway's API) or a bare one, plus ops routes."""

        @contextlib.asynccontextmanager
        async def lifespan(_: FastAPI) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        if app is None:
            app = FastAPI(title=f"fog-{self.service}", lifespan=lifespan)
        else:
            app.router.lifespan_context = lifespan
        add_ops_routes(app, self, metrics=self.settings.metrics_port is None)
        app.state.runtime = self  # for whoever holds the app: its metrics_url, its dead_tasks
        app.add_middleware(HttpMetricsMiddleware)  # outermost: it counts what the others refuse too
        return app


def _how_it_ended(task: asyncio.Task[None], exc: BaseException | None) -> str:
    """A word on it, with the exception's type and not its text: ``/healthz`` answers anyone, and
    an exception's text may hold what only the log should (the traceback is logged)."""
    if task.cancelled():
        return "cancelled"
    return "returned" if exc is None else f"raised {type(exc).__name__}"


async def _until_cancelled(task: asyncio.Task[None]) -> None:
    """Wait for a cancelled task to end, cancelling it again while it runs on: on Python 3.11,
    ``asyncio.wait_for`` (nats-py's requests use it) swallows a cancellation that arrives as its
    future completes, and the loop it was in would run on and hold up the stop for good."""
    while not task.done():
        await asyncio.wait({task}, timeout=CANCEL_AGAIN_AFTER_S)
        if not task.done():
            task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
