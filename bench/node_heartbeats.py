"""Node heartbeat benchmark: N simulated agents heartbeating through the gateway's WebSocket.

Starts the dev stack the way ``fogctl dev up`` does (``fogctl.devstack.DevStack``: NATS,
PostgreSQL and every service as its own process, durable defaults; not its two local agents),
with one change: the gateway's rate limits are off (a rate of 0), so registering thousands of
nodes from one address and one provider is not refused. The heartbeat interval is the stack's
default (5 s) for both the gateway (``FOG_GATEWAY_NODE_HEARTBEAT_INTERVAL_S``, what agents are
told) and the registry (``FOG_REGISTRY_HEARTBEAT_INTERVAL_S``, what liveness expects) unless
``--interval`` sets both.

Then, from this process:

1. **register**: one provider account (``roles: ["user", "provider"]``, one argon2id login), then
   ``POST /v1/nodes`` N times, ``--register-concurrency`` at a time: N node credentials.
2. **connect**: N WebSockets to ``/v1/nodes/connect`` (``websockets.asyncio.client.connect``,
   as the agent uses it: permessage-deflate, and a ping with each heartbeat instead of websockets'
   keepalive; ``--pings-as-before``: the keepalive's ping every 20 s and none with the beats),
   ``--connect-concurrency`` handshakes at a time; each reads its welcome.
3. **heartbeat**: one sender task walks the connections in order, so node i beats at
   ``i × interval / N`` into every interval: 2,000 beats/s for 10,000 nodes at 5 s, evenly spread.
   Each beat is a pre-serialised JSON prefix and suffix around its ``seq``. A reader task per
   connection counts what the gateway sends back and how the connection ends. Once connected,
   the simulator freezes its objects out of the cyclic GC (``gc.freeze``): otherwise its own full
   collections pause it for seconds and make every node late at once.
4. **measure**: a line every interval from the first beat on (beats sent, how late, beats
   published, the longest gap between two published batches, statuses, gateway and registry
   CPU); then, once every node is ``ready`` and ``--warmup`` seconds have passed, a steady window
   of ``--seconds``: beats sent and published, the CPU of each process, statuses at the window's
   start and end, the ``NodeStatusChanged`` events published (a core NATS subscription on the
   event's subject sees every JetStream publish) and how many nodes changed status.

"Published to the registry" is counted by a second subscriber on the registry's heartbeat
subject (core NATS delivers every batch to every subscriber; the registry subscribes without a
queue group): the heartbeats in every batch the gateway published. The registry's own FastStream
counters give the batches it received and handled, which must match. Statuses and
``last_heartbeat_at`` are read from ``registry.nodes`` as the Postgres superuser: ``GET /v1/nodes``
does not expose a ``limit`` and answers at most 500 nodes.
Usage: ``python bench/node_heartbeats.py [--nodes 10000] [--interval 5] [--seconds 60] [--warmup 30]
[--connect-concurrency 32] [--register-concurrency 32]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import resource
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import psutil
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from fog_shared.commands.registry import HEARTBEATS
from fog_shared.devservers import free_port
from fog_shared.events.registry import NodeStatusChanged
from fogctl.devstack import DATABASE, DevStack

PASSWORD = "correct horse battery staple"  # noqa: S105 - the benchmark's own throwaway account
GATEWAY_LIMITS = {"FOG_GATEWAY_RATE_PER_SOURCE_PER_S": "0", "FOG_GATEWAY_RATE_PER_PRINCIPAL_PER_S": "0"}
CAPABILITIES = {"cpu_cores": 4, "memory_bytes": 8 << 30, "disk_bytes": 100 << 30, "arch": "x86_64", "os": "Linux 6.1"}
#: what follows ``"seq":`` in every heartbeat (the rest of it is fixed per node)
BEAT_SUFFIX = ',"running_jobs":0,"usage":{"cpu_percent":1.0,"memory_used_bytes":1,"disk_used_bytes":1}}'
#: processes whose CPU time is reported, as named in the dev stack's state ("simulator" is us)
MEASURED = ("gateway", "registry", "nats", "postgres", "auth", "scheduler", "messaging", "simulator")
#: the sender wakes this often and sends every beat that has come due
SEND_TICK_S = 0.01


class BenchStack(DevStack):
    """The dev stack with the gateway's rate limits off. ``service_env`` drops every ``FOG_*``
    variable of the caller's environment, so they are added where the gateway is started. The
    heartbeat interval is the stack's own setting (``heartbeat_interval_s``: gateway and registry)."""

    def spawn(self, svc: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        return super().spawn(svc, env | GATEWAY_LIMITS if svc == "gateway" else env)


# -- CPU -------------------------------------------------------------------------------------


class CpuMeter:
    """CPU seconds used so far by each measured process (Postgres with its backends) and by the
    whole machine (what it used beyond our processes is other load: this machine is shared)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    def sample(self) -> dict[str, float]:
        used = {name: _cpu_seconds(process, name == "postgres") for name, process in self.processes.items()}
        machine = psutil.cpu_times()
        used["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return used

    def rss_mib(self, name: str) -> float:
        return float(self.processes[name].memory_info().rss) / 2**20


def _cpu_seconds(process: psutil.Process, with_children: bool) -> float:
    """With children: those still running, and those that ended and were waited for (Postgres's
    autovacuum workers and backends come and go)."""
    times = process.cpu_times()
    total: float = times.user + times.system
    if not with_children:
        return total
    total += times.children_user + times.children_system
    for child in process.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:  # ended between listing and reading: counted once it is waited for
            continue
        total += times.user + times.system
    return total


# -- the simulated fleet ---------------------------------------------------------------------


@dataclass
class Fleet:
    """N node connections, their heartbeats, and what happened to them."""

    node_ids: list[str]
    credentials: list[str]
    #: as the agent does: a ping with each beat, websockets' own keepalive off; else its keepalive alone
    #: (a ping every 20 s), as agents did before they pinged with their beats
    pings_with_beats: bool = True
    sockets: list[ClientConnection | None] = field(init=False)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    prefixes: list[str] = field(init=False)
    sent: int = 0
    #: sends that found their connection closed
    send_failures: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    #: messages from the gateway after the welcome, by type/code
    received: Counter[str] = field(default_factory=Counter)
    #: connections that ended, by close code (received from the gateway, or None)
    closed: Counter[int | None] = field(default_factory=Counter)
    pings: int = 0
    pongs: int = 0
    #: the largest delay of a beat behind its due time: since the timeline's last line, and in the window
    max_delay_s: float = 0.0
    window_max_delay_s: float = 0.0

    def __post_init__(self) -> None:
        self.sockets = [None] * len(self.node_ids)
        self.prefixes = [f'{{"type":"heartbeat","node_id":{json.dumps(n)},"seq":' for n in self.node_ids]

    @property
    def open(self) -> int:
        return sum(ws is not None for ws in self.sockets)

    async def connect_all(self, ws_url: str, concurrency: int) -> None:
        """Connect every node, ``concurrency`` handshakes at a time; failures are counted."""
        gate = asyncio.Semaphore(concurrency)
        connected = [asyncio.Event() for _ in self.node_ids]
        self.tasks = [asyncio.create_task(self._hold(i, ws_url, gate, connected[i])) for i in range(len(connected))]
        await asyncio.gather(*(e.wait() for e in connected))

    async def _hold(self, i: int, ws_url: str, gate: asyncio.Semaphore, connected: asyncio.Event) -> None:
        """Node i's connection: open it, read the welcome, then count what else arrives until it ends."""
        try:
            async with gate:
                keepalive: dict[str, Any] = {"ping_interval": None} if self.pings_with_beats else {}
                ws = await connect(
                    ws_url, additional_headers={"Authorization": f"Bearer {self.credentials[i]}"}, open_timeout=60,
                    **keepalive,
                )  # fmt: skip
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if welcome.get("type") != "welcome":
                self.connect_failures[f"first message {welcome.get('type')!r}"] += 1
                await ws.close()
                return
        except Exception as exc:  # refused handshakes, timeouts, resets: counted by kind
            self.connect_failures[type(exc).__name__] += 1
            return
        finally:
            connected.set()
        self.sockets[i] = ws
        try:
            async for message in ws:
                decoded = json.loads(message)
                self.received[f"{decoded.get('type')}:{decoded.get('code', '')}"] += 1
        except ConnectionClosed:
            pass
        finally:
            self.sockets[i] = None
            self.closed[ws.close_code] += 1

    async def beat(self, interval_s: float) -> None:
        """Forever: node i beats at ``i × interval / N`` into every interval, ``seq`` counting up."""
        n = len(self.node_ids)
        loop = asyncio.get_running_loop()
        start, k = loop.time(), 0  # k: beats due so far, over all nodes
        spacing = interval_s / n
        while True:
            now = loop.time()
            due = int((now - start) / spacing)
            if due > k:
                delay = now - (start + k * spacing)
                self.max_delay_s, self.window_max_delay_s = (
                    max(self.max_delay_s, delay),
                    max(self.window_max_delay_s, delay),
                )
            while k < due:
                i, seq = k % n, k // n
                ws = self.sockets[i]
                if ws is not None:
                    try:
                        await ws.send(self.prefixes[i] + str(seq) + BEAT_SUFFIX)
                        self.sent += 1
                        if self.pings_with_beats:
                            asyncio.ensure_future(await ws.ping()).add_done_callback(self._ponged)
                            self.pings += 1
                    except ConnectionClosed:
                        self.send_failures += 1
                k += 1
            await asyncio.sleep(SEND_TICK_S)

    def _ponged(self, pong: asyncio.Future[float]) -> None:
        if not pong.cancelled() and pong.exception() is None:
            self.pongs += 1

    async def close(self) -> None:
        open_sockets = [ws for ws in self.sockets if ws is not None]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(ws.close() for ws in open_sockets), return_exceptions=True), 30)
        for task in self.tasks:
            task.cancel()


class Tap:
    """A second subscriber on the registry's heartbeat subject: every batch the gateway published."""

    def __init__(self) -> None:
        self.batches = 0
        self.heartbeats = 0
        self.last_at = time.monotonic()
        #: the longest time between two batches since the last reset: the gateway publishes one
        #: every 0.25 s, so anything much longer is the gateway (or NATS) stalling
        self.max_gap_s = 0.0
        self.window_max_gap_s = 0.0
        #: gaps over a second, since the window started
        self.window_long_gaps = 0
        #: status events published so far, by the status announced
        self.statuses: Counter[str] = Counter()

    async def on_batch(self, msg: Any) -> None:
        now = time.monotonic()
        gap, self.last_at = (now - self.last_at if self.batches else 0.0), now
        self.max_gap_s, self.window_max_gap_s = max(self.max_gap_s, gap), max(self.window_max_gap_s, gap)
        self.window_long_gaps += gap > 1.0
        self.batches += 1
        self.heartbeats += msg.data.count(b'"node_id"')  # one per heartbeat; departed ids are bare

    async def on_status(self, msg: Any) -> None:
        """A ``NodeStatusChanged`` event as the registry's outbox publishes it to JetStream."""
        self.statuses[json.loads(msg.data).get("status", "?")] += 1

    def take_max_gap(self) -> float:
        gap, self.max_gap_s = self.max_gap_s, 0.0
        return gap


# -- the registry's view ---------------------------------------------------------------------


async def statuses(db: asyncpg.Connection, ids: list[str]) -> dict[str, int]:
    """How many of the simulated nodes are in each status."""
    rows = await db.fetch("SELECT status, count(*) AS n FROM registry.nodes WHERE id = ANY($1) GROUP BY status", ids)
    return {r["status"]: r["n"] for r in rows}


async def freshness(
    db: asyncpg.Connection, ids: list[str], since_s: float, window_start: float
) -> tuple[int, int, float]:
    """Nodes whose persisted heartbeat is at most ``since_s`` old; nodes whose status changed
    since the wall time ``window_start``; the oldest persisted heartbeat's age in seconds."""
    row = await db.fetchrow(
        "SELECT count(*) FILTER (WHERE last_heartbeat_at >= now() - make_interval(secs => $1)) AS fresh,"
        " count(*) FILTER (WHERE status_changed_at >= to_timestamp($2)) AS changed,"
        " extract(epoch FROM now() - min(last_heartbeat_at)) AS oldest"
        " FROM registry.nodes WHERE id = ANY($3)",
        since_s,
        window_start,
        ids,
    )
    return row["fresh"], row["changed"], float(row["oldest"] or 0.0)


#: FastStream's Prometheus counters for the registry's heartbeat subscriber
_METRIC = re.compile(r"^(fog_received_\w+)\{([^}]*)\} ([0-9.e+-]+)$")


async def registry_counters(http: httpx.AsyncClient, registry_url: str) -> dict[str, float]:
    """Batches the registry received and handled on the heartbeat subject, and the time spent."""
    counters: dict[str, float] = {}
    for line in (await http.get(f"{registry_url}/metrics")).text.splitlines():
        match = _METRIC.match(line)
        if match is None or HEARTBEATS not in match[2] or not match[1].endswith(("_total", "_sum")):
            continue
        name, labels, value = match[1], match[2], float(match[3])
        if name == "fog_received_processed_messages_total":
            name += "{" + ",".join(p for p in labels.split(",") if p.startswith("status=")) + "}"
        counters[name] = counters.get(name, 0.0) + value
    return counters


# -- phases ----------------------------------------------------------------------------------


@dataclass
class Report:
    nodes: int
    interval_s: float
    register_s: float = 0.0
    registered: int = 0
    #: registrations sent again after a transport error (each may have left an unused node)
    register_retries: int = 0
    connect_s: float = 0.0
    connected: int = 0
    ready_s: float = 0.0
    window_s: float = 0.0
    sent: int = 0
    tapped: int = 0
    tapped_batches: int = 0
    registry: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    rss_mib: dict[str, float] = field(default_factory=dict)
    status_start: dict[str, int] = field(default_factory=dict)
    status_end: dict[str, int] = field(default_factory=dict)
    fresh: int = 0
    #: nodes whose status changed (at least once) during the window
    changed: int = 0
    oldest_s: float = 0.0
    #: ``NodeStatusChanged`` events published during the window, by status
    events: dict[str, int] = field(default_factory=dict)
    #: connections that ended before the window's end, by close code
    closed: dict[int | None, int] = field(default_factory=dict)
    max_delay_s: float = 0.0
    max_gap_s: float = 0.0
    long_gaps: int = 0
    fleet: Fleet | None = None
    timeline: list[str] = field(default_factory=list)


async def register_nodes(
    http: httpx.AsyncClient, nodes: int, concurrency: int, report: Report
) -> tuple[list[str], list[str]]:
    """One provider account, then ``nodes`` registrations: their ids and credentials."""
    account = {"email": "provider@example.org", "password": PASSWORD, "roles": ["user", "provider"]}
    created = await http.post("/v1/auth/register", json=account)
    assert created.status_code == 201, created.text
    token = {"value": ""}

    async def log_in() -> None:
        login = await http.post("/v1/auth/login", json={"email": account["email"], "password": PASSWORD})
        assert login.status_code == 200, login.text
        token["value"] = login.json()["access_token"]

    await log_in()
    relogin = asyncio.Lock()
    ids: list[str] = [""] * nodes
    credentials: list[str] = [""] * nodes
    next_node = iter(range(nodes))

    async def worker() -> None:
        for i in next_node:
            body = {"name": f"bench-{i}", "capabilities": CAPABILITIES}
            while True:
                used = token["value"]
                try:
                    answer = await http.post("/v1/nodes", json=body, headers={"Authorization": f"Bearer {used}"})
                except httpx.TransportError:  # a dropped connection: try again (a node may be left over)
                    report.register_retries += 1
                    if report.register_retries > 100:
                        raise
                    continue
                if answer.status_code == 401:  # the access token expired (10 minutes): log in again, once
                    async with relogin:
                        if token["value"] == used:
                            await log_in()
                    continue
                assert answer.status_code == 201, answer.text
                ids[i], credentials[i] = answer.json()["node"]["id"], answer.json()["credential"]
                break

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    report.register_s, report.registered = time.monotonic() - started, nodes
    return ids, credentials


async def watch(fleet: Fleet, tap: Tap, cpu: CpuMeter, dsn: str, every_s: float, report: Report) -> None:
    """From the first beat on, every ``every_s``: rates, statuses and CPU, printed and kept."""
    db = await asyncpg.connect(dsn)
    try:
        print(
            "    t  sent/s late ms  publ/s  gap s  ready suspect   down gw cores reg cores  (t: s since the first beat)"
        )
        started, sent, tapped, used = time.monotonic(), fleet.sent, tap.heartbeats, cpu.sample()
        while True:
            await asyncio.sleep(every_s)
            now, counts, cpu_now = time.monotonic(), await statuses(db, fleet.node_ids), cpu.sample()
            line = (
                f"{now - started:5.0f} {(fleet.sent - sent) / every_s:7.0f} {1000 * fleet.max_delay_s:7.0f} "
                f"{(tap.heartbeats - tapped) / every_s:7.0f} "
                f"{tap.take_max_gap():6.2f} "
                f"{counts.get('ready', 0):6} {counts.get('suspect', 0):7} {counts.get('down', 0):6} "
                f"{(cpu_now['gateway'] - used['gateway']) / every_s:8.2f} "
                f"{(cpu_now['registry'] - used['registry']) / every_s:9.2f}"
            )
            report.timeline.append(line)
            print(line, flush=True)
            sent, tapped, used, fleet.max_delay_s = fleet.sent, tap.heartbeats, cpu_now, 0.0
    finally:
        await db.close()


async def wait_for(what: str, check: Any, timeout: float) -> float:
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not after {timeout:g}s")
        await asyncio.sleep(1.0)
    return time.monotonic() - started


async def run(stack: BenchStack, args: argparse.Namespace, cpu: CpuMeter, report: Report) -> None:
    assert stack.state is not None
    assert stack.pg_server is not None
    urls = {p.name: p.url for p in stack.state.processes}
    pg = stack.pg_server
    db_dsn = pg.dsn("postgres", pg.password_file.read_text().strip(), DATABASE)
    db = await asyncpg.connect(db_dsn)
    nc = await nats.connect(stack.state.nats_url)
    tap = Tap()
    await nc.subscribe(HEARTBEATS, cb=tap.on_batch)
    await nc.subscribe(NodeStatusChanged.TYPE.subject, cb=tap.on_status)  # every JetStream publish
    limits = httpx.Limits(max_connections=args.register_concurrency + 2, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=stack.state.gateway_url, limits=limits, timeout=60.0) as http:
        ids, credentials = await register_nodes(http, args.nodes, args.register_concurrency, report)
        print(f"registered {args.nodes} nodes in {report.register_s:.1f} s", flush=True)

        fleet = report.fleet = Fleet(ids, credentials, pings_with_beats=not args.pings_as_before)
        ws_url = stack.state.gateway_url.replace("http://", "ws://") + "/v1/nodes/connect"
        started = time.monotonic()
        await fleet.connect_all(ws_url, args.connect_concurrency)
        # The simulator's own long-lived objects (10,000 connections) out of the cyclic GC's full
        # collections: otherwise they pause this process for seconds and every beat is late.
        gc.collect()
        gc.freeze()
        report.connect_s, report.connected = time.monotonic() - started, fleet.open
        print(
            f"connected {fleet.open} in {report.connect_s:.1f} s; failures {dict(fleet.connect_failures)}", flush=True
        )

        sender = asyncio.create_task(fleet.beat(args.interval))
        timeline = asyncio.create_task(watch(fleet, tap, cpu, db_dsn, args.interval, report))
        try:

            async def all_ready() -> bool:
                return (await statuses(db, ids)).get("ready", 0) >= report.connected

            # First beats spread over one interval; then the registry's batch and its transitions.
            report.ready_s = await wait_for("every connected node ready", all_ready, 10 * args.interval + 120)
            print(
                f"all {report.connected} connected nodes ready {report.ready_s:.1f} s after the first beat "
                f"(status events so far: {dict(tap.statuses)})",
                flush=True,
            )
            await asyncio.sleep(args.warmup)  # warm-up: the steady rate, the ready wave's aftermath

            registry_before = await registry_counters(http, urls["registry"])
            report.status_start = await statuses(db, ids)
            sent, tapped, batches, cpu_before = fleet.sent, tap.heartbeats, tap.batches, cpu.sample()
            events_before = Counter(tap.statuses)
            wall_start, started = time.time(), time.monotonic()
            fleet.window_max_delay_s, tap.window_max_gap_s, tap.window_long_gaps = 0.0, 0.0, 0
            await asyncio.sleep(args.seconds)
            cpu_after, report.window_s = cpu.sample(), time.monotonic() - started
            report.sent, report.tapped = fleet.sent - sent, tap.heartbeats - tapped
            report.tapped_batches, report.max_delay_s = tap.batches - batches, fleet.window_max_delay_s
            report.max_gap_s, report.long_gaps = tap.window_max_gap_s, tap.window_long_gaps
            report.cpu_s = {name: cpu_after[name] - cpu_before[name] for name in cpu_before}
            registry_after = await registry_counters(http, urls["registry"])
            report.registry = {k: v - registry_before.get(k, 0.0) for k, v in registry_after.items()}
            report.status_end = await statuses(db, ids)
            # A live node's persisted beat is at most one interval (its period) plus one registry
            # flush (one interval) plus the gateway's batching old: 2 intervals + 2 s of slack.
            report.fresh, report.changed, report.oldest_s = await freshness(db, ids, 2 * args.interval + 2, wall_start)
            report.closed = dict(fleet.closed)
            report.events = dict(tap.statuses - events_before)
            report.rss_mib = {name: cpu.rss_mib(name) for name in ("gateway", "registry", "simulator")}
        finally:
            for task in (sender, timeline):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await fleet.close()
            await nc.close()
            await db.close()


def print_report(r: Report) -> None:
    assert r.fleet is not None
    w = r.window_s
    print(f"\nnodes {r.nodes}, heartbeat interval {r.interval_s:g} s (offered {r.nodes / r.interval_s:,.0f} beats/s)")
    print(
        f"register: {r.registered} nodes in {r.register_s:.1f} s = {r.registered / r.register_s:.0f} nodes/s"
        f"{f' ({r.register_retries} retried after a dropped connection)' if r.register_retries else ''}"
    )
    print(
        f"connect:  {r.connected} connections in {r.connect_s:.1f} s = {r.connected / r.connect_s:.0f}/s; "
        f"failures {dict(r.fleet.connect_failures) or 0}"
    )
    print(f"ready:    all connected nodes ready {r.ready_s:.1f} s after the first beats were due")
    print(f"\nsteady window {w:.1f} s:")
    delay_ms = r.max_delay_s * 1000
    print(
        f"  heartbeats sent by the simulator:      {r.sent / w:8.0f}/s  (latest beat {delay_ms:.0f} ms behind schedule)"
    )
    print(
        f"  heartbeats published to the registry:  {r.tapped / w:8.0f}/s  in {r.tapped_batches / w:.1f} batches/s; "
        f"longest gap between batches {r.max_gap_s:.2f} s, {r.long_gaps} gaps over 1 s"
    )
    received = r.registry.get("fog_received_messages_total", 0.0)
    handled = r.registry.get('fog_received_processed_messages_total{status="acked"}', 0.0)
    handled_s = r.registry.get("fog_received_processed_messages_duration_seconds_sum", 0.0)
    print(
        f"  batches the registry received/handled: {received:.0f} / {handled:.0f} of {r.tapped_batches} published; "
        f"handler time {1000 * handled_s / max(handled, 1):.1f} ms per batch"
    )
    print(f"  node statuses at the start: {r.status_start}; at the end: {r.status_end}")
    print(
        f"  status events published during the window: {sum(r.events.values())}"
        f"{f' {r.events}' if r.events else ''}; "
        f"nodes whose status changed: {r.changed}"
    )
    print(
        f"  nodes whose persisted heartbeat is at most {2 * r.interval_s + 2:g} s old: {r.fresh} "
        f"(oldest {r.oldest_s:.1f} s)"
    )
    print(
        f"  pings with the beats: {r.fleet.pings} sent, {r.fleet.pongs} answered (whole run)\n"
        f"  gateway → simulator messages: {dict(r.fleet.received) or 0}; connections that ended: "
        f"{r.closed or 0}; sends on a closed connection: {r.fleet.send_failures}"
    )
    print("\nCPU during the window, in cores (the machine has 2):")
    ours = sum(r.cpu_s.get(name, 0.0) for name in MEASURED)
    for name in (*MEASURED, "other"):
        used = r.cpu_s.get("machine", 0.0) - ours if name == "other" else r.cpu_s.get(name, 0.0)
        per_beat = (
            f"{1e6 * used / r.tapped:7.0f} µs per heartbeat" if r.tapped and name in ("gateway", "registry") else ""
        )
        print(f"  {name:<10} {used / w:6.3f}  {per_beat}")
    both = (r.cpu_s.get("gateway", 0.0) + r.cpu_s.get("registry", 0.0)) / w
    print(f"  gateway + registry: {both:.3f} cores")
    offered = round(r.nodes / r.interval_s * w)
    nodes_missed = {
        "nodes not ready at the end": r.nodes - r.status_end.get("ready", 0),
        "nodes whose status changed in the window": r.changed,
        "connections that ended": sum(r.closed.values()),
    }
    # Beats: the window's edges cut through batches in flight, so up to 1 % or one second's worth
    # of beats may fall on the other side of an edge; more missing is a shortfall.
    beats_missed = {"beats offered but not sent": offered - r.sent, "beats sent but not published": r.sent - r.tapped}
    slack = max(offered // 100, round(r.nodes / r.interval_s))
    problems = [f"{what}: {n}" for what, n in nodes_missed.items() if n > 0]
    problems += [f"{what}: {n}" for what, n in beats_missed.items() if n > slack]
    problems += [f"gateway + registry at {both:.2f} cores"] if both >= 0.5 else []
    verdict = "held" if not problems else f"not held ({'; '.join(problems)})"
    print(f"target (every node ready throughout, gateway + registry under half a core): {verdict}")
    print(f"memory (RSS, MiB): {', '.join(f'{k} {v:.0f}' for k, v in r.rss_mib.items())}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=5.0, help="heartbeat interval, gateway and registry")
    parser.add_argument("--seconds", type=float, default=60.0, help="the steady measurement window")
    parser.add_argument("--warmup", type=float, default=30.0, help="after every node is ready, before the window")
    parser.add_argument("--connect-concurrency", type=int, default=32)
    parser.add_argument("--register-concurrency", type=int, default=32)
    parser.add_argument(
        "--pings-as-before", action="store_true",
        help="no ping with each beat: websockets' keepalive alone, as agents did before they pinged with their beats",
    )  # fmt: skip
    args = parser.parse_args()
    # One descriptor per connection here, and in the gateway, which inherits this limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.nodes + 1000:
        print(f"warning: open files limited to {hard}; {args.nodes} connections need more", flush=True)
    report = Report(args.nodes, args.interval)
    with tempfile.TemporaryDirectory(prefix="fog-bench-") as tmp:
        stack = BenchStack(Path(tmp), gateway_port=free_port(), heartbeat_interval_s=args.interval)
        try:
            state = stack.up()
            stack.wait_ready(120)
            pids = {p.name: p.pid for p in state.processes} | {"simulator": os.getpid()}
            gateway_files = psutil.Process(pids["gateway"]).rlimit(psutil.RLIMIT_NOFILE)
            print(f"pids {pids}; gateway open-files limit {gateway_files}", flush=True)
            cpu = CpuMeter({name: pids[name] for name in MEASURED})
            asyncio.run(run(stack, args, cpu, report))
        except BaseException:
            for log in sorted(stack.logs.glob("*.log")):  # the data dir goes with the stack: show why first
                print(f"--- {log.name}, last lines:\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
            raise
        finally:
            stack.down()
    print_report(report)


if __name__ == "__main__":
    main()
