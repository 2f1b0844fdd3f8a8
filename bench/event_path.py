"""Event-path benchmark: outbox → JetStream → inbox handler, beside raw nats-py, in one run.

Starts its own NATS and PostgreSQL (from the wheels, default durability settings: fsync on,
``sync_interval: always``), then measures, each part in its own process as in production:

* raw: nats-py JetStream publish (pipelined, acked) → durable pull consumer (fetch, ack);
* fog: producers commit one event per transaction through ``outbox.record`` → ``OutboxRelay``
  → JetStream → ``EventConsumer`` (inbox row + a handler insert, one transaction per batch).

Each path runs at a fixed offered rate for a fixed time; latency is from just before the
producer's commit (raw: publish) to the handler, p50/p99 over every event. Throughput is events
handled per second of the run. Usage: ``python bench/event_path.py [--rate 5000] [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import nats

from fog_shared.bus.consumer import EventConsumer
from fog_shared.bus.provision import provision
from fog_shared.bus.topology import DEAD_LETTER_STREAM, ConsumerSpec, StreamSpec, Topology
from fog_shared.devservers import NatsServer, PostgresServer, free_ports
from fog_shared.envelope import Envelope
from fog_shared.events import Event
from fog_shared.events.auth import UserRegistered
from fog_shared.pg import outbox
from fog_shared.pg.migrate import migrate, migrations_for
from fog_shared.pg.outbox import OutboxRelay
from fog_shared.pg.pool import create_pool
from fog_shared.pg.roles import ServiceDatabase, ensure_database, provision_service

WORKERS = 1
STREAM = "EVT_AUTH"
RAW_STREAM = "BENCH_RAW"
SPEC = ConsumerSpec(stream=STREAM, durable="bench__users", filter_subjects=("fog.evt.auth.user.>",))
PRODUCER_DB = ServiceDatabase("auth", "fog_auth", "bench-auth", "fog_auth_owner", "bench-auth-owner")
CONSUMER_DB = ServiceDatabase("messaging", "fog_messaging", "bench-msg", "fog_messaging_owner", "bench-msg-owner")


@dataclass
class Result:
    name: str
    offered: int
    handled: int
    seconds: float
    latencies_ms: list[float]

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "path": self.name,
            "offered_per_s": self.offered,
            "handled": self.handled,
            "events_per_s": round(self.handled / self.seconds),
            "p50_ms": round(statistics.median(lat), 2) if lat else None,
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1], 2) if lat else None,
        }


async def paced(rate: int, seconds: float, send: Any) -> int:
    """Call ``send(n)`` with the events due every 5 ms tick; returns how many were sent."""
    tick = 0.005
    start = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate) - sent
        if due > 0:
            await send(due)
            sent += due
        await asyncio.sleep(tick)
    return sent


# -- raw nats-py ----------------------------------------------------------------------------
def raw_producer(url: str, rate: int, seconds: float) -> None:
    async def main() -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()

        async def send(n: int) -> None:
            futures = [
                await js.publish_async("bench.raw", json.dumps({"t": time.time()}).encode(), stream=RAW_STREAM)
                for _ in range(n)
            ]
            await asyncio.gather(*futures)

        await paced(rate, seconds, send)
        await nc.close()

    asyncio.run(main())


def raw_consumer(url: str, expected: int, out: Any) -> None:
    async def main() -> None:
        nc = await nats.connect(url)
        sub = await nc.jetstream().pull_subscribe("bench.raw", durable="raw", stream=RAW_STREAM)
        latencies: list[float] = []
        last = 0.0
        while len(latencies) < expected:
            try:
                msgs = await sub.fetch(500, timeout=2)
            except Exception:
                if time.time() - (last or time.time()) > 5:
                    break
                continue
            now = time.time()
            last = now
            for m in msgs:
                latencies.append((now - json.loads(m.data)["t"]) * 1000)
                await m.ack()
        out.put((latencies, last))
        await nc.close()

    asyncio.run(main())


# -- the Fog path ---------------------------------------------------------------------------
def fog_producer(dsn: str, rate: int, seconds: float, per_tx: int) -> None:
    async def main() -> None:
        pool = await create_pool(dsn, "auth", min_size=8, max_size=8)
        counter = 0

        async def commit(first: int, count: int) -> None:
            async with pool.acquire() as conn, conn.transaction():
                for n in range(first, first + count):
                    event = UserRegistered(
                        user_id=f"{per_tx}-{n}",
                        email=f"u{n}@example.org",
                        roles=["user"],
                        registered_at=datetime.now(UTC),
                    )
                    await outbox.record(conn, event, source="fog/auth")

        async def send(n: int) -> None:
            nonlocal counter
            chunks = [(counter + i, min(per_tx, n - i)) for i in range(0, n, per_tx)]
            await asyncio.gather(*(commit(first, count) for first, count in chunks))
            counter += n

        await paced(rate, seconds, send)
        await pool.close()

    asyncio.run(main())


def fog_relay(dsn: str, url: str) -> None:
    async def main() -> None:
        nc = await nats.connect(url)
        relay = OutboxRelay(dsn=dsn, schema="auth", nc=nc, stream=STREAM, poll_interval_s=0.5)
        await relay.run()

    asyncio.run(main())


def fog_consumer(dsn: str, url: str, expected: int, out: Any) -> None:
    latencies: list[float] = []
    finished = [0.0]

    async def handler(conn: asyncpg.Connection, events: list[tuple[Event, Envelope]]) -> None:
        """A batch handler: one pipelined executemany for the whole batch."""
        users = [e for e, _ in events if isinstance(e, UserRegistered)]
        await conn.executemany("INSERT INTO users (user_id, email, registered_at) VALUES ($1, $2, $3)",
                               [(u.user_id, u.email, u.registered_at) for u in users])  # fmt: skip
        now = time.time()
        latencies.extend((now - u.registered_at.timestamp()) * 1000 for u in users)
        finished[0] = now

    async def main() -> None:
        nc = await nats.connect(url)
        pool = await create_pool(dsn, "messaging", min_size=2, max_size=4)
        engine = EventConsumer(
            spec=SPEC, batch_handler=handler, pool=pool, js=nc.jetstream(), batch_size=500, workers=WORKERS
        )
        task = asyncio.create_task(engine.run())
        last_count, last_change = 0, time.monotonic()
        while len(latencies) < expected and time.monotonic() - last_change < 10:
            await asyncio.sleep(0.1)
            if len(latencies) != last_count:
                last_count, last_change = len(latencies), time.monotonic()
        task.cancel()
        out.put((latencies, finished[0]))

    asyncio.run(main())


# -- orchestration --------------------------------------------------------------------------
async def prepare(pg: PostgresServer, url: str) -> tuple[str, str]:
    admin = await asyncpg.connect(pg.superuser_dsn)
    await ensure_database(admin, "fog")
    await admin.close()
    admin = await asyncpg.connect(pg.dsn("postgres", pg.password_file.read_text().strip(), "fog"))
    messaging_migrations = Path(__file__).parents[1] / "services/messaging/fog_messaging/migrations"
    for db, migrations_dir in ((PRODUCER_DB, None), (CONSUMER_DB, messaging_migrations)):
        await provision_service(admin, "fog", db)
        owner = await asyncpg.connect(pg.dsn(db.owner_role, db.owner_password, "fog"))
        await migrate(owner, db.schema, migrations_for(migrations_dir or Path("/nonexistent"), db.schema))
        await owner.close()
    await admin.close()
    nc = await nats.connect(url)
    topology = Topology(
        streams=(StreamSpec(STREAM, ("fog.evt.auth.>",)), StreamSpec(RAW_STREAM, ("bench.raw",)), DEAD_LETTER_STREAM),
        consumers=(SPEC,),
    )
    await provision(nc.jetstream(), topology)
    await nc.close()
    return (
        pg.dsn(PRODUCER_DB.role, PRODUCER_DB.password, "fog"),
        pg.dsn(CONSUMER_DB.role, CONSUMER_DB.password, "fog"),
    )


def run_raw(url: str, rate: int, seconds: float) -> Result:
    out: Any = mp.Queue()
    expected = int(rate * seconds)
    consumer = mp.Process(target=raw_consumer, args=(url, expected, out))
    consumer.start()
    started = time.time()
    producer = mp.Process(target=raw_producer, args=(url, rate, seconds))
    producer.start()
    latencies, finished = out.get()
    elapsed = finished - started
    producer.join()
    consumer.join()
    return Result("raw nats-py", rate, len(latencies), elapsed, latencies)


def run_fog(producer_dsn: str, consumer_dsn: str, url: str, rate: int, seconds: float, per_tx: int) -> Result:
    out: Any = mp.Queue()
    expected = int(rate * seconds)
    consumer = mp.Process(target=fog_consumer, args=(consumer_dsn, url, expected, out))
    relay = mp.Process(target=fog_relay, args=(producer_dsn, url), daemon=True)
    consumer.start()
    relay.start()
    started = time.time()
    producer = mp.Process(target=fog_producer, args=(producer_dsn, rate, seconds, per_tx))
    producer.start()
    latencies, finished = out.get()
    elapsed = finished - started
    producer.join()
    consumer.join()
    relay.terminate()
    return Result(f"fog, {per_tx}/commit", rate, len(latencies), elapsed, latencies)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=5000, help="offered events per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--paths", default="raw,fog", help="which paths to run: raw, fog or both")
    parser.add_argument(
        "--per-tx", default="1,25", help="events per producer transaction, one fog run each (comma-separated)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fog-bench-") as tmp:
        nats_port, monitor_port, pg_port = free_ports(3)
        nats_server = NatsServer(Path(tmp) / "nats", nats_port, monitor_port)
        pg = PostgresServer(Path(tmp) / "pg", port=pg_port)
        for server in (nats_server, pg):
            server.data_dir.mkdir()
            server.start()
        try:
            producer_dsn, consumer_dsn = asyncio.run(prepare(pg, nats_server.url))
            paths = args.paths.split(",")
            results = []
            if "raw" in paths:
                results.append(run_raw(nats_server.url, args.rate, args.seconds))
            for per_tx in (int(n) for n in args.per_tx.split(",")) if "fog" in paths else ():
                results.append(run_fog(producer_dsn, consumer_dsn, nats_server.url, args.rate, args.seconds, per_tx))
        finally:
            nats_server.stop()
            pg.stop()
    print(f"{'path':<20} {'offered/s':>10} {'handled':>8} {'events/s':>9} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        s = r.summary()
        print(f"{s['path']:<20} {s['offered_per_s']:>10} {s['handled']:>8} {s['events_per_s']:>9} "
              f"{s['p50_ms']!s:>8} {s['p99_ms']!s:>8}")  # fmt: skip


if __name__ == "__main__":
    main()
