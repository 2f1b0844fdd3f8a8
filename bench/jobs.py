"""Job benchmarks (issue 5): placement alone, one job's latency, and an array's throughput.

Four parts, each optional (``--parts``; the first three by default):

* **placement**: pure, in this process. ``--nodes`` simulated ``NodeCapacity`` nodes (mixed sizes,
  architectures, regions and labels, some GPUs; 5 % down, 3 % draining, 2 % suspect), then
  ``--decisions`` requests of one kind after another (plain; constrained by labels, region, arch
  or a GPU; with affinities; a retry avoiding a node; a mix of them), each decided with
  ``domain.place`` and the default ``PlacementPolicy``, starting where the previous one started
  plus one and taking the chosen node's capacity (``node.take``), as the placement loop does. Then
  the same mix through the loop's own ``PlacementLoop._decide`` (requests parsed from job specs,
  explanations built) in batches of 500, as a cycle sees them. Also: a request no node can take,
  which examines every node. Reported as decisions per second of this one core.
* **latency** and **throughput** run the real stack: ``fogctl.devstack.DevStack`` (NATS,
  PostgreSQL with ``fsync=on``, every service its own process, uvicorn with one worker each) with
  the gateway's rate limits raised (the limiters still run, they never refuse), and ``--agents``
  local ``fog-agent`` processes, each joined (``fog-agent join``) as a node of a provider account
  and run (``fog-agent run``) with its own state directory. An agent offers the cores it may run
  on (this machine's 2), so with ``--cpu-cores 0.25`` each runs up to 8 jobs at once.

  - **latency** (on the idle stack, before anything else): ``--singles`` jobs ``["date", "+%s%N"]``
    with each of two clients, taking turns (after ``--warmup`` uncounted ones each), one at a time:
    submit, wait until it has ended, pause ``--gap``, next. The clients: fog_client (httpx), as a
    user's program would; and ``WireClient``, a bare HTTP/1.1 request on a kept-alive connection,
    to tell the stack's time from the client library's. For each: **submit → running**, from the wall clock just before
    ``POST /v1/jobs`` to the wall-clock time the job's own process printed (same machine, same
    clock; it includes the exec of ``date`` itself); the client's time to the first update on the
    owner's ``/v1/jobs/updates`` WebSocket that shows the job started; and, from the database,
    ``started_at - submitted_at`` (the scheduler stamps ``submitted_at`` when it takes the submit,
    ``assigned_at`` when placement decides, ``started_at`` when it records the agent's ``started``).
  - **throughput**: for each count in ``--jobs``, one array of that many ``["true"]``
    (``POST /v1/jobs/array``), then its progress counted in the database every 0.5 s until every
    job has ended (or ``--timeout``). Jobs/s is the count over the time from just before the POST
    to the last job's ``finished_at``; the steady rate is the middle 80 % of completions over the
    time they took; latency is ``finished_at - submitted_at`` per job (every job of an array shares
    one ``submitted_at``: when the scheduler took the array). CPU time of every process is read
    around each array run. With ``--watch``, the owner watches ``/v1/jobs/updates`` meanwhile, as a
    user following their jobs live would.

* **cancel**, on the same stack: for each count in ``--cancel-jobs``, an array that asks for a label no
  node has (all of it stays pending), then its summary (``GET /v1/jobs/arrays/{id}``) and its cancel
  (``POST .../cancel``) through fog_client, each timed from the call to its answer.

* **after**, on the same stack: jobs run after others (a spec's ``after``). An array of ``--after-jobs``
  ``true`` (the map), one job after the whole array (the reduce), then ``--chain`` jobs each after the one
  before. Reported: the map's jobs/s (each of its ends releases the reduce), the gap from the map's last
  end to the reduce's placement, and each link's from one job's end to the next one's placement (the
  scheduler's own timestamps: ``finished_at``, ``assigned_at``).

With ``--profile DIR``, py-spy records the scheduler and the gateway (``--format raw``, collapsed
stacks) for ``--profile-seconds`` from the moment the first array is accepted, and the most
frequent frames are printed: run it apart from the figures you publish (sampling costs CPU too).

Usage: ``python bench/jobs.py [--parts placement,latency,throughput,cancel,after] [--jobs 1000,10000]
[--agents 4] [--cpu-cores 0.25] [--singles 50] [--nodes 10000] [--decisions 20000]
[--profile DIR]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import asyncpg
import psutil

from fog_client import ApiError, Constraints, FogClient, Job, JobSpec, Resources
from fog_scheduler import domain
from fog_scheduler.placement import PlacementLoop, request_of
from fog_shared.devservers import free_port
from fog_shared.events.scheduler import JobAssigned
from fog_shared.pg.leader import LeaderLock
from fogctl.devstack import DATABASE, DEV_AGENT_ENVIRONMENT, DevStack

#: far above what this client sends (see bench/gateway_auth.py)
GATEWAY_LIMITS = {
    "FOG_GATEWAY_RATE_PER_SOURCE_PER_S": "1000000",
    "FOG_GATEWAY_BURST_PER_SOURCE": "1000000",
    "FOG_GATEWAY_RATE_PER_PRINCIPAL_PER_S": "1000000",
    "FOG_GATEWAY_BURST_PER_PRINCIPAL": "1000000",
}
MIB, GIB = 2**20, 2**30
T = TypeVar("T")
#: the processes whose CPU is reported; "agents" sums every agent with its jobs
MEASURED = ("client", "gateway", "auth", "registry", "scheduler", "messaging", "agents", "postgres", "nats")


# -- placement alone ---------------------------------------------------------------------------

SIZES = ((2, 4), (4, 8), (4, 16), (8, 32), (16, 64), (32, 128), (64, 256))  # (cores, GiB)
REGIONS = ("eu-west", "eu-central", "us-east", "us-west", "ap-south")


def simulated_nodes(count: int, seed: int = 1) -> list[domain.NodeCapacity]:
    """A cluster as the placement loop sees it: sorted by id, mixed sizes, some not ready."""
    rng = random.Random(seed)
    nodes = []
    for index in range(count):
        cores, gib = rng.choice(SIZES)
        roll = rng.random()
        status = "down" if roll < 0.05 else "draining" if roll < 0.08 else "suspect" if roll < 0.10 else "ready"
        gpus = rng.choice((0, 0, 0, 0, 0, 0, 0, 1, 2, 4))
        labels = {"site": f"site-{index % 40}", "tier": rng.choice(("gold", "silver", "bronze")),
                  "disk": rng.choice(("ssd", "hdd"))}  # fmt: skip
        if gpus:
            labels["gpu"] = "nvidia"
        nodes.append(domain.NodeCapacity(
            node_id=f"node-{index:05d}", status=status, cpu_cores=float(cores), memory_bytes=gib * GIB, gpus=gpus,
            arch="aarch64" if rng.random() < 0.2 else "x86_64", region=rng.choice(REGIONS), labels=labels,
            reputation=rng.uniform(0.2, 0.9),
        ))  # fmt: skip
    return nodes


def spec_of(kind: str, rng: random.Random) -> dict[str, Any]:
    """A job spec (as the scheduler stores it) of one kind of request."""
    resources: dict[str, Any] = {"cpu_cores": rng.choice((0.5, 1.0, 2.0)), "memory_bytes": 512 * MIB, "gpus": 0}
    constraints: dict[str, Any] = {"labels": {}, "region": None, "arch": None}
    affinities: list[dict[str, Any]] = []
    if kind == "constrained":  # 1 node in 14 (ready, ssd, x86_64, one region), or 1 in 4 (a GPU)
        if rng.random() < 0.75:
            constraints |= {"labels": {"disk": "ssd"}, "region": rng.choice(REGIONS), "arch": "x86_64"}
            resources["cpu_cores"] = rng.choice((0.5, 1.0))
        else:
            resources["gpus"] = 1
    elif kind == "affinity":
        affinities = [{"label": "tier", "value": "gold", "weight": 50}, {"label": "disk", "value": "ssd", "weight": 20}]
    elif kind == "unplaceable":
        constraints["labels"] = {"site": "nowhere"}
    return {"command": ["true"], "env": {}, "resources": resources, "constraints": constraints,
            "affinities": affinities}  # fmt: skip


MIX = ("plain",) * 5 + ("constrained",) * 3 + ("affinity",) * 2


def request_kinds(kind: str, count: int, rng: random.Random) -> list[str]:
    return [rng.choice(MIX) for _ in range(count)] if kind == "mixed" else [kind] * count


@dataclass
class PlacementResult:
    name: str
    decisions: int
    seconds: float
    placed: int
    #: nodes examined per decision, on average (what ``enough_candidates`` bounds)
    examined: float

    def row(self) -> str:
        rate = self.decisions / self.seconds if self.seconds else 0.0
        examined = "-" if self.examined != self.examined else f"{self.examined:.1f}"  # NaN: not counted
        return (
            f"{self.name:<50} {self.decisions:>9} {self.seconds:>8.3f} {rate:>12,.0f} "
            f"{1e6 * self.seconds / max(1, self.decisions):>9.1f} {self.placed:>8} {examined:>9}"
        )


def time_place(kind: str, node_count: int, decisions: int, *, retries: bool = False) -> PlacementResult:
    """``domain.place`` for ``decisions`` requests of ``kind``, taking capacity as the loop does."""
    rng = random.Random(2)
    nodes = simulated_nodes(node_count)
    ids = [node.node_id for node in nodes]
    requests = []
    for each in request_kinds(kind, decisions, rng):
        tried = [rng.choice(ids)] if retries else []
        requests.append(request_of(spec_of(each, rng), tried))
    policy, rotation = domain.PlacementPolicy(), itertools.count()
    by_id = {node.node_id: node for node in nodes}
    placed, examined = 0, 0
    started = time.perf_counter()
    for request in requests:
        decision = domain.place(request, nodes, policy, start=next(rotation))
        if decision.node_id is not None:
            by_id[decision.node_id].take(request)
            placed += 1
    seconds = time.perf_counter() - started
    # Counted apart, untimed: how many nodes a decision looks at (filtered + scored).
    for index, request in enumerate(requests[:1000]):
        decision = domain.place(request, nodes, policy, start=index)
        examined += sum(decision.filtered.values()) + (policy.enough_candidates if decision.node_id else 0)
    label = "fits nowhere: every node examined" if kind == "unplaceable" else kind
    name = f"domain.place, {label}" + (", retries" if retries else "")
    return PlacementResult(name, decisions, seconds, placed, examined / min(1000, len(requests)))


def time_decide(node_count: int, decisions: int, batch: int = 500) -> PlacementResult:
    """The loop's ``_decide`` on jobs as a cycle hands them over (``store.pending_batch``'s row and the spec)."""
    rng = random.Random(3)
    nodes = simulated_nodes(node_count)
    # The columns ``_decide`` reads; 20 owners taking turns.
    jobs = [
        {"id": uuid.uuid4(), "owner_id": f"owner-{index % 20}", "spec": spec_of(kind, rng), "attempt": 1,
         "tried_nodes": [], "priority": 50, "turn": 1 + index // 20}
        for index, kind in enumerate(request_kinds("mixed", decisions, rng))
    ]  # fmt: skip
    # Never started: _decide touches neither the lock nor the database.
    loop = PlacementLoop(LeaderLock("postgresql://unused", "scheduler", "placement"), domain.PlacementPolicy(),
                         dsn="postgresql://unused", schema="scheduler")  # fmt: skip
    decide = loop._decide
    placed = 0
    now = datetime.now(UTC)
    started = time.perf_counter()
    for first in range(0, len(jobs), batch):
        done, _, _ = decide(cast(list[asyncpg.Record], jobs[first : first + batch]), nodes, now)
        placed += len(done)
    seconds = time.perf_counter() - started
    return PlacementResult(f"PlacementLoop._decide, mixed ({batch}/batch)", decisions, seconds, placed, float("nan"))


def run_placement(node_count: int, decisions: int) -> list[PlacementResult]:
    results = [time_place(kind, node_count, decisions) for kind in ("plain", "constrained", "affinity", "mixed")]
    results.append(time_place("mixed", node_count, decisions, retries=True))
    results.append(time_decide(node_count, decisions))
    results.append(time_place("unplaceable", node_count, max(1, decisions // 50)))
    return results


def report_placement(results: list[PlacementResult], node_count: int) -> None:
    print(f"\nPlacement alone: {node_count:,} simulated nodes, default PlacementPolicy, one core of this process")
    print(
        f"{'path, requests':<50} {'decisions':>9} {'seconds':>8} {'decisions/s':>12} {'µs each':>9} "
        f"{'placed':>8} {'examined':>9}"
    )
    for result in results:
        print(result.row())


# -- the real stack ----------------------------------------------------------------------------


class BenchStack(DevStack):
    """The dev stack with the gateway's rate limits raised (``service_env`` drops the caller's
    ``FOG_*`` variables, so they are added where the gateway is started), and with the
    scheduler's push of assignments off when ``push`` is False, its placement at submit off
    when ``place_at_submit`` is False, and its preparations off when ``prepare`` is False (to
    measure without them)."""

    push = True
    place_at_submit = True
    prepare = True
    #: the CPUs the agents run on (all of them when empty)
    agents_cpus: frozenset[int] = frozenset()

    def spawn(self, svc: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        if svc == "gateway":
            env = env | GATEWAY_LIMITS
        if svc == "scheduler" and not self.push:
            env = env | {"FOG_SCHEDULER_PUSH_ASSIGNMENTS": "false"}
        if svc == "scheduler" and not self.place_at_submit:
            env = env | {"FOG_SCHEDULER_PLACE_AT_SUBMIT": "false"}
        if svc == "scheduler" and not self.prepare:
            env = env | {"FOG_SCHEDULER_PREPARE_AT_SUBMIT": "false"}
        return super().spawn(svc, env)


class CpuMeter:
    """CPU seconds used so far by each group of processes, their descendants (Postgres backends,
    the agents' jobs) included, ended ones too (reaped children count in their parent)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {name: [psutil.Process(pid) for pid in pids] for name, pids in groups.items()}

    def sample(self) -> dict[str, float]:
        used = {
            name: sum(_cpu_seconds(p, name != "client") for p in processes) for name, processes in self.groups.items()
        }
        machine = psutil.cpu_times()
        used["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return used


def _cpu_seconds(process: psutil.Process, with_children: bool) -> float:
    """The client (this process) is the stack's parent: its own time only."""
    if not with_children:
        times = process.cpu_times()
        return float(times.user + times.system)
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        for p in (process, *process.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
                times = p.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    return total


def cpu_used(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


@dataclass
class Bench:
    stack: BenchStack
    gateway: str
    db: asyncpg.Connection
    user: FogClient
    cpu: CpuMeter
    pids: dict[str, int]


async def start_agents(stack: BenchStack, gateway: str, count: int) -> None:
    """``count`` agents as nodes of a new provider account, each with its own state directory."""
    email, password = f"provider-{secrets.token_hex(4)}@example.org", secrets.token_urlsafe(18)
    async with FogClient(gateway) as fog:
        await until_answered(lambda: fog.register(email, password, roles=("user", "provider")))
    await asyncio.to_thread(_join_and_run, stack, gateway, email, password, count)


def _join_and_run(stack: BenchStack, gateway: str, email: str, password: str, count: int) -> None:
    """As ``DevStack.start_agents`` does: ``fog-agent join``, then ``fog-agent run``; ``stack.down()``
    stops them first."""
    for index in range(1, count + 1):
        name = f"bench-agent-{index}"
        state_dir = stack.dir / "agents" / name
        log = (stack.logs / f"{name}.log").open("ab")
        subprocess.run(
            [sys.executable, "-m", "fog_agent", "join", "--gateway", gateway, "--name", name, "--label", "bench=true",
             "--email", email, "--password-stdin", "--state-dir", str(state_dir)],
            input=password.encode(), check=True, stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
        agent = stack.agents[name] = subprocess.Popen(
            [sys.executable, "-m", "fog_agent", "run", "--state-dir", str(state_dir)],
            stdout=log, stderr=log, start_new_session=True, env={**os.environ, **DEV_AGENT_ENVIRONMENT},
        )  # fmt: skip
        if stack.agents_cpus:  # before its first job: the launcher and the jobs inherit it
            os.sched_setaffinity(agent.pid, stack.agents_cpus)


async def until_answered(call: Callable[[], Awaitable[T]], timeout: float = 30.0) -> T:
    """``call()``, again while the gateway answers 503: a service may be ready (``/readyz``) a moment
    before its NATS subscriptions are."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await call()
        except ApiError as exc:
            if exc.status != 503 or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.5)


async def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:g} s")
        await asyncio.sleep(interval)
    return value


def job_spec(cpu_cores: float, command: tuple[str, ...] = ("true",), network: str | None = None) -> JobSpec:
    resources = Resources(cpu_cores=cpu_cores, memory_bytes=64 * MIB)
    return JobSpec(command=list(command), resources=resources, timeout_s=60, network=network)


#: a single job that says when it ran: the wall clock in nanoseconds, as the client reads it too
CLOCK_JOB = ("date", "+%s%N")


# -- where the time goes -----------------------------------------------------------------------

#: the agent's own log lines (fog_agent.cli's format, local time) for a job's start and end
AGENT_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO fog_agent\.jobs: job (\S+) attempt \d+: (starting|succeeded|failed)"
)
#: each job's path, stage by stage, from the scheduler's timestamps, the outbox and the agents' logs
STAGES = (
    ("submitted_at -> assigned_at: the decision starts (a cycle; 0 when placed at submit)", "submitted", "assigned"),
    ("assigned_at -> job.assigned recorded: reads, decides, writes", "assigned", "recorded"),
    ("recorded -> relay marked it published (commit, relay, JetStream ack)", "recorded", "published"),
    ("recorded -> agent starts the job (+ JetStream -> gateway -> agent)", "recorded", "agent_started"),
    ("agent starts the job -> scheduler records started_at", "agent_started", "started"),
    ("agent starts the job -> its process runs (singles: the job's own clock)", "agent_started", "ran"),
    ("agent starts the job -> agent sees it end (sandbox, true)", "agent_started", "agent_ended"),
    ("agent sees it end -> scheduler records finished_at", "agent_ended", "finished"),
)


DB_STAGES = ("submitted", "assigned", "started", "finished", "recorded", "published")


async def job_times(bench: Bench, where: str, arg: Any, ran: dict[str, float] | None = None) -> list[dict[str, float]]:
    """Per job, epoch seconds of every stage in ``STAGES`` that is known (``ran``: when each job's
    process said it ran, for the jobs that say so)."""
    rows = await bench.db.fetch(
        "SELECT j.id::text AS id, j.submitted_at AS submitted, j.assigned_at AS assigned, j.started_at AS started,"
        " j.finished_at AS finished, o.created_at AS recorded, o.published_at AS published"
        " FROM scheduler.jobs j LEFT JOIN scheduler.outbox o"
        "   ON o.subject = $2 AND convert_from(o.body, 'UTF8')::jsonb->>'job_id' = j.id::text"
        f" WHERE {where}",
        arg,
        JobAssigned.TYPE.subject,
    )
    agent: dict[str, dict[str, float]] = {}
    for log in sorted(bench.stack.logs.glob("bench-agent-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if (match := AGENT_LINE.match(line)) is not None:
                at = datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S,%f").astimezone().timestamp()
                agent.setdefault(match[2], {})["agent_started" if match[3] == "starting" else "agent_ended"] = at
    times = []
    for row in rows:
        known = {key: row[key].timestamp() for key in DB_STAGES if row[key] is not None}
        if ran is not None and row["id"] in ran:
            known["ran"] = ran[row["id"]]
        times.append(known | agent.get(row["id"], {}))
    return times


def report_stages(title: str, times: list[dict[str, float]]) -> None:
    print(f"\n{title}: where each job's time goes, ms")
    print(f"{'stage':<74} {'jobs':>6} {'p50':>8} {'p90':>8} {'p99':>8}")
    for name, start, end in STAGES:
        values = [1000 * (t[end] - t[start]) for t in times if start in t and end in t]
        if values:
            print(
                f"{name:<74} {len(values):>6} {percentile(values, 0.5):>8.1f} {percentile(values, 0.9):>8.1f} "
                f"{percentile(values, 0.99):>8.1f}"
            )


# -- latency: one job at a time ------------------------------------------------------------------


@dataclass
class Single:
    job_id: str
    #: what sent the POST: ``FOG_CLIENT`` or ``WIRE``
    client: str
    #: client: submit response, first update showing the job started, first update showing it ended
    responded_s: float
    running_s: float
    ended_s: float
    #: from just before the POST to the time the job's process printed (the wall clock)
    ran_s: float = 0.0
    #: from just before the POST to the scheduler's submitted_at (the wall clock)
    taken_s: float = 0.0
    #: database: from submitted_at
    assigned_s: float = 0.0
    started_s: float = 0.0
    finished_s: float = 0.0


class Updates:
    """The owner's ``/v1/jobs/updates``: when each job was first seen started, and ended."""

    def __init__(self, fog: FogClient) -> None:
        self.fog = fog
        self.started: dict[str, float] = {}
        self.ended: dict[str, asyncio.Future[float]] = {}
        self.task: asyncio.Task[None] | None = None
        self.seen = 0  # updates received

    def start(self) -> None:
        self.task = asyncio.create_task(self._read())

    def ended_future(self, job_id: str) -> asyncio.Future[float]:
        return self.ended.setdefault(job_id, asyncio.get_running_loop().create_future())

    async def _read(self) -> None:
        async with contextlib.aclosing(self.fog.job_updates()) as updates:
            async for job in updates:
                now = time.perf_counter()
                self.seen += 1
                if job.started_at is not None or job.ended:
                    self.started.setdefault(job.id, now)
                if job.ended and not (future := self.ended_future(job.id)).done():
                    future.set_result(now)

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


FOG_CLIENT, WIRE = "fog_client", "wire"


class WireClient:
    """``POST /v1/jobs`` on one kept-alive HTTP/1.1 connection, nothing between the bench and the socket.

    What the stack takes, without a client library's own time: on this machine fog_client (httpx) spends
    ~1.3 ms of a call before its bytes are sent and after the answer comes (docs/performance.md).
    """

    def __init__(self, gateway: str, access_token: str) -> None:
        url = urlsplit(gateway)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.access_token = access_token
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def submit_job(self, spec: JobSpec) -> Job:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port)
        reader, writer = self._streams
        body = json.dumps(spec.model_dump(mode="json", exclude_none=True)).encode()
        head = (
            f"POST /v1/jobs HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: Bearer {self.access_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        status_and_headers = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = dict(line.split(":", 1) for line in status_and_headers[1:] if ":" in line)
        length = int(next(value for name, value in headers.items() if name.strip().lower() == "content-length"))
        answer = await reader.readexactly(length)
        if status_and_headers[0].split()[1] != "201":
            raise RuntimeError(f"POST /v1/jobs: {status_and_headers[0]}: {answer[:200]!r}")
        return Job.model_validate_json(answer)

    async def aclose(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            with contextlib.suppress(OSError):
                await self._streams[1].wait_closed()


async def run_singles(
    bench: Bench, count: int, warmup: int, gap_s: float, spec: JobSpec
) -> tuple[list[Single], list[dict[str, float]]]:
    """``count`` jobs submitted with each client, taking turns (the same conditions for both)."""
    updates = Updates(bench.user)
    updates.start()
    assert bench.user.access_token is not None
    wire = WireClient(bench.gateway, bench.user.access_token)
    clients: dict[str, FogClient | WireClient] = {FOG_CLIENT: bench.user, WIRE: wire}
    singles, ran_at = [], dict[str, float]()
    try:
        for index in range(2 * (warmup + count)):
            client = (FOG_CLIENT, WIRE)[index % 2]
            sent_ns, sent = time.time_ns(), time.perf_counter()
            job = await clients[client].submit_job(spec)
            responded = time.perf_counter()
            # The first warm-up also waits for the update socket to be watched: its job may end unseen.
            ended = await _ended(bench, updates, job.id, timeout=30 if index else 10)
            if index >= 2 * warmup:
                running = updates.started.get(job.id, ended)
                single = Single(job.id, client, responded - sent, running - sent, ended - sent)
                single.taken_s = job.submitted_at.timestamp() - sent_ns / 1e9
                printed = (await bench.user.job_output(job.id)).output.strip()
                single.ran_s = float("nan")
                if printed.isdigit():
                    ran_at[job.id] = int(printed) / 1e9
                    single.ran_s = ran_at[job.id] - sent_ns / 1e9
                singles.append(single)
            await asyncio.sleep(gap_s)
    finally:
        await updates.close()
        await wire.aclose()
    rows = await bench.db.fetch(
        "SELECT id::text, extract(epoch FROM assigned_at - submitted_at) AS assigned,"
        " extract(epoch FROM started_at - submitted_at) AS started,"
        " extract(epoch FROM finished_at - submitted_at) AS finished"
        " FROM scheduler.jobs WHERE id = ANY($1::uuid[])",
        [s.job_id for s in singles],
    )
    by_id = {row["id"]: row for row in rows}
    for single in singles:
        row = by_id[single.job_id]
        single.assigned_s, single.started_s = float(row["assigned"]), float(row["started"])
        single.finished_s = float(row["finished"])
    return singles, await job_times(bench, "j.id = ANY($1::uuid[])", [s.job_id for s in singles], ran_at)


async def _ended(bench: Bench, updates: Updates, job_id: str, timeout: float) -> float:
    try:
        return await asyncio.wait_for(asyncio.shield(updates.ended_future(job_id)), timeout)
    except TimeoutError:  # the socket was not watched yet (the first warm-up): ask instead
        await bench.user.wait_job(job_id, poll_s=0.05, timeout=30)
        return time.perf_counter()


def percentile(values: Iterable[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def report_singles(singles: list[Single], gap_s: float) -> None:
    print(f"\nSingle jobs on the idle stack, one at a time ({len(singles)} jobs, {gap_s:g} s apart), ms.")
    print("Submitted by turns with fog_client (httpx) and from the wire (WireClient: no client library):")
    print(f"{'interval':<52} {'client':<10} {'jobs':>5} {'p50':>8} {'p99':>8} {'max':>8}")
    rows: tuple[tuple[str, Callable[[Single], float]], ...] = (
        ("client: POST /v1/jobs answered", lambda s: s.responded_s),
        ("submit -> running (the job's own clock)", lambda s: s.ran_s),
        ("submit -> the scheduler takes it (submitted_at)", lambda s: s.taken_s),
        ("client: submit -> update shows it started", lambda s: s.running_s),
        ("client: submit -> update shows it ended", lambda s: s.ended_s),
        ("db: submitted_at -> assigned_at (placement)", lambda s: s.assigned_s),
        ("db: submitted_at -> started_at (agent's report)", lambda s: s.started_s),
        ("db: submitted_at -> finished_at", lambda s: s.finished_s),
    )
    for name, of in rows:
        for client in (FOG_CLIENT, WIRE):
            values = [1000 * of(s) for s in singles if s.client == client]
            if values:
                print(
                    f"{name:<52} {client:<10} {len(values):>5} {percentile(values, 0.5):>8.1f} "
                    f"{percentile(values, 0.99):>8.1f} {max(values):>8.1f}"
                )


# -- throughput: one array ---------------------------------------------------------------------


@dataclass
class ArrayRun:
    count: int
    cpu_cores: float
    submit_s: float = 0.0
    #: from just before the POST to the last job's finished_at (or to the timeout)
    seconds: float = 0.0
    succeeded: int = 0
    other: dict[str, int] = field(default_factory=dict)
    steady_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_s: dict[str, float] = field(default_factory=dict)
    finished: bool = False
    #: per job, when it reached each stage (see ``STAGES``)
    stages: list[dict[str, float]] = field(default_factory=list)

    @property
    def ended(self) -> int:
        return self.succeeded + sum(self.other.values())

    @property
    def per_s(self) -> float:
        return self.ended / self.seconds if self.seconds else 0.0


async def run_array(
    bench: Bench,
    count: int,
    cpu_cores: float,
    timeout_s: float,
    profile: Path | None,
    profile_s: float,
    network: str | None = None,
) -> ArrayRun:
    run = ArrayRun(count, cpu_cores)
    before = bench.cpu.sample()
    wall_start, started = datetime.now(UTC), time.perf_counter()
    array = await bench.user.submit_array(job_spec(cpu_cores, network=network), count)
    run.submit_s = time.perf_counter() - started
    print(f"  {count:,} jobs accepted in {run.submit_s:.2f} s (array {array.array_id})", flush=True)
    spies = start_profiles(bench.pids, profile, profile_s, count) if profile else []
    array_id, deadline, shown = uuid.UUID(array.array_id), started + timeout_s, started
    counts: Counter[str] = Counter()
    while time.perf_counter() < deadline:
        rows = await bench.db.fetch(
            "SELECT status, count(*) AS n FROM scheduler.jobs WHERE array_id = $1 GROUP BY status", array_id
        )
        counts = Counter({row["status"]: row["n"] for row in rows})
        ended = sum(n for status, n in counts.items() if status in ("succeeded", "failed", "timed_out", "cancelled"))
        if ended >= count:
            run.finished = True
            break
        if time.perf_counter() - shown >= 10:
            shown = time.perf_counter()
            print(f"  {shown - started:6.0f} s: {dict(sorted(counts.items()))}", flush=True)
        await asyncio.sleep(0.5)
    run.cpu_s = cpu_used(before, bench.cpu.sample())
    cpu_seconds = time.perf_counter() - started
    for spy in spies:
        spy.wait()
    run.succeeded = counts.pop("succeeded", 0)
    run.other = {status: n for status, n in counts.items() if n}
    stats = await bench.db.fetchrow(
        "SELECT max(finished_at) AS last,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - submitted_at) AS p50,"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY finished_at - submitted_at) AS p99,"
        " max(finished_at - submitted_at) AS max,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY assigned_at - submitted_at) AS assigned_p50,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY finished_at - assigned_at) AS assigned_to_end_p50,"
        " percentile_cont(0.99) WITHIN GROUP (ORDER BY finished_at - assigned_at) AS assigned_to_end_p99,"
        " percentile_disc(0.1) WITHIN GROUP (ORDER BY finished_at) AS first_tenth,"
        " percentile_disc(0.9) WITHIN GROUP (ORDER BY finished_at) AS ninth_tenth"
        " FROM scheduler.jobs WHERE array_id = $1 AND finished_at IS NOT NULL",
        array_id,
    )
    if stats is not None and stats["last"] is not None:
        end = stats["last"] if run.finished else datetime.now(UTC)
        run.seconds = (end - wall_start).total_seconds()
        span = (stats["ninth_tenth"] - stats["first_tenth"]).total_seconds()
        run.steady_per_s = 0.8 * run.ended / span if span > 0 else 0.0
        for key in ("p50", "p99", "max", "assigned_p50", "assigned_to_end_p50", "assigned_to_end_p99"):
            run.latency_ms[key] = 1000 * stats[key].total_seconds() if stats[key] is not None else float("nan")
    run.cpu_s["_seconds"] = cpu_seconds
    run.stages = await job_times(bench, "j.array_id = $1", array_id)
    return run


def report_arrays(runs: list[ArrayRun], agents: int) -> None:
    print(f"\nArrays of ['true'] on {agents} local agents (2 cores each offered), submit -> every job ended:")
    print(
        f"{'jobs':>7} {'cores/job':>9} {'submit s':>9} {'total s':>8} {'jobs/s':>8} {'steady/s':>9} "
        f"{'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  {'assign p50':>10} {'assign->end p50/p99':>20}  not ok"
    )
    for r in runs:
        lat = r.latency_ms
        print(
            f"{r.count:>7} {r.cpu_cores:>9g} {r.submit_s:>9.2f} {r.seconds:>8.1f} {r.per_s:>8.0f} "
            f"{r.steady_per_s:>9.0f} {lat.get('p50', 0):>9.0f} {lat.get('p99', 0):>9.0f} {lat.get('max', 0):>9.0f}  "
            f"{lat.get('assigned_p50', 0):>10.0f} "
            f"{lat.get('assigned_to_end_p50', 0):>9.0f}/{lat.get('assigned_to_end_p99', 0):<10.0f}  "
            f"{r.other or '-'}{'' if r.finished else ' (timed out)'}"
        )
    print("\nCPU during each array run, % of one core (the machine has 2), and CPU ms per job:")
    names = " ".join(f"{name:>9}" for name in (*MEASURED, "other"))
    print(f"{'jobs':>7} {names}")
    for r in runs:
        seconds = r.cpu_s["_seconds"]
        ours = sum(r.cpu_s.get(name, 0.0) for name in MEASURED)
        shares = [r.cpu_s.get(name, 0.0) for name in MEASURED] + [r.cpu_s.get("machine", 0.0) - ours]
        print(f"{r.count:>7} " + " ".join(f"{100 * used / seconds:>9.0f}" for used in shares))
        print(f"{'ms/job':>7} " + " ".join(f"{1000 * used / max(1, r.ended):>9.2f}" for used in shares))


# -- profiles ----------------------------------------------------------------------------------


def start_profiles(pids: dict[str, int], out: Path, seconds: float, count: int) -> list[subprocess.Popen[bytes]]:
    out.mkdir(parents=True, exist_ok=True)
    spy = Path(sys.executable).with_name("py-spy")
    spies = []
    for name in ("scheduler", "gateway", "agent"):
        target = out / f"{name}-{count}.txt"
        spies.append(subprocess.Popen(
            [str(spy), "record", "-d", str(int(seconds)), "--format", "raw", "-p", str(pids[name]), "-o", str(target)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))  # fmt: skip
    return spies


def summarise_profile(path: Path, top: int = 18) -> None:
    """The functions most often on the stack (inclusive) and on top of it (self), in % of the samples
    py-spy took (it skips idle threads); frames on nearly every stack (the event loop, uvicorn) are left out."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, weight = line.rpartition(" ")
        if not stack or not weight.isdigit():
            continue
        n = int(weight)
        frames = [_frame(f) for f in stack.split(";")]
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    print(f"\n{path.name}: {total} samples")
    common = [frame for frame, n in inclusive.items() if n >= 0.9 * total]
    for frame in common:
        del inclusive[frame]
    for title, counter in (("on the stack", inclusive), ("on top (self)", own)):
        print(f"  {title}:")
        for frame, n in counter.most_common(top):
            print(f"    {100 * n / max(1, total):5.1f} %  {frame}")


def _frame(text: str) -> str:
    # py-spy: "function (path/to/file.py:line)"; keep the function and the file's last two parts
    name, _, where = text.partition(" (")
    where = where.rstrip(")")
    file = "/".join(where.rsplit(":", 1)[0].split("/")[-2:])
    return f"{name} ({file})"


# -- main --------------------------------------------------------------------------------------


@dataclass
class StackResults:
    singles: list[Single] = field(default_factory=list)
    single_stages: list[dict[str, float]] = field(default_factory=list)
    runs: list[ArrayRun] = field(default_factory=list)
    cancels: list[CancelRun] = field(default_factory=list)
    afters: list[AfterRun] = field(default_factory=list)


@dataclass
class AfterRun:
    count: int
    map_per_s: float
    #: the map's last end -> the reduce placed, ms
    reduce_gap_ms: float
    #: each link's end -> the next job placed, ms
    link_gaps_ms: list[float]


async def run_after(bench: Bench, count: int, links: int, cpu_cores: float, timeout_s: float) -> AfterRun:
    spec = job_spec(cpu_cores)
    started = datetime.now(UTC)
    array = await bench.user.submit_array(spec, count)
    reduce = await bench.user.submit_job(spec.model_copy(update={"after": [array.array_id]}))
    chain = [reduce.id]
    for _ in range(links):
        chain.append((await bench.user.submit_job(spec.model_copy(update={"after": [chain[-1]]}))).id)
    print(f"  the map of {count:,}, its reduce and a chain of {links} submitted", flush=True)

    async def chain_ended() -> bool:
        status = await bench.db.fetchval("SELECT status FROM scheduler.jobs WHERE id = $1", uuid.UUID(chain[-1]))
        return status in ("succeeded", "failed", "timed_out", "cancelled")

    await wait_for("the chain's last job to end", chain_ended, timeout_s, interval=0.1)
    mapped = await bench.db.fetchrow(
        "SELECT max(finished_at) AS last, count(*) FILTER (WHERE status = 'succeeded') AS ok FROM scheduler.jobs"
        " WHERE array_id = $1",
        uuid.UUID(array.array_id),
    )
    assert mapped is not None
    rows = await bench.db.fetch(
        "SELECT id::text AS id, status, assigned_at, finished_at FROM scheduler.jobs WHERE id = ANY($1::uuid[])",
        [uuid.UUID(job_id) for job_id in chain],
    )
    by_id = {row["id"]: row for row in rows}
    links_in_order = [by_id[job_id] for job_id in chain]
    failed = [row["id"] for row in links_in_order if row["status"] != "succeeded"]
    if failed or mapped["ok"] != count:
        raise RuntimeError(f"the map ({mapped['ok']} of {count} succeeded) or the chain ({failed}) did not succeed")
    gaps = [
        1000 * (after["assigned_at"] - before["finished_at"]).total_seconds()
        for before, after in itertools.pairwise(links_in_order)
    ]
    reduce_gap = 1000 * (links_in_order[0]["assigned_at"] - mapped["last"]).total_seconds()
    return AfterRun(count, count / (mapped["last"] - started).total_seconds(), reduce_gap, gaps)


def report_afters(runs: list[AfterRun]) -> None:
    print("\nJobs after others (the scheduler's timestamps):")
    print("| map jobs | map jobs/s | map's last end -> reduce placed (ms) | link: end -> next placed, p50 / max (ms) |")
    print("|---|---|---|---|")
    for run in runs:
        print(f"| {run.count:,} | {run.map_per_s:.0f} | {run.reduce_gap_ms:.1f} |"
              f" {percentile(run.link_gaps_ms, 0.5):.1f} / {max(run.link_gaps_ms):.1f} |")  # fmt: skip


@dataclass
class CancelRun:
    count: int
    submit_s: float
    summary_s: float
    cancel_s: float
    statuses: dict[str, int]


async def run_cancel(bench: Bench, count: int) -> CancelRun:
    """An array no node can take (it asks for a label none has), so all of it is pending; then its summary and
    its cancel through the client, each timed from the call to the answer."""
    spec = JobSpec(command=["true"], constraints=Constraints(labels={"bench": "nowhere"}))
    started = time.perf_counter()
    array = await bench.user.submit_array(spec, count)
    submitted = time.perf_counter()
    await bench.user.array_summary(array.array_id)
    summed = time.perf_counter()
    summary = await bench.user.cancel_array(array.array_id)
    cancelled = time.perf_counter()
    return CancelRun(count, submitted - started, summed - submitted, cancelled - summed, summary.statuses)


def report_cancels(runs: list[CancelRun]) -> None:
    print("\n| pending array | submit (s) | summary (ms) | cancel (s) | jobs cancelled per s | after |")
    print("|---:|---:|---:|---:|---:|---|")
    for run in runs:
        print(f"| {run.count:,} | {run.submit_s:.2f} | {1000 * run.summary_s:.0f} | {run.cancel_s:.2f} |"
              f" {run.count / run.cancel_s:,.0f} | {run.statuses} |")  # fmt: skip


async def measure_stack(stack: BenchStack, args: argparse.Namespace, parts: set[str]) -> StackResults:
    assert stack.state is not None
    assert stack.pg_server is not None
    gateway = stack.state.gateway_url
    pg = stack.pg_server
    db = await asyncpg.connect(pg.dsn("postgres", pg.password_file.read_text().strip(), DATABASE))
    user = FogClient(gateway, timeout=60.0)
    try:
        await start_agents(stack, gateway, args.agents)

        async def agents_ready() -> bool:
            ready = await db.fetchval("SELECT count(*) FROM scheduler.nodes WHERE status = 'ready'")
            return bool(ready >= args.agents)

        await wait_for("the agents ready in the scheduler's view", agents_ready, 60)
        email, password = f"user-{secrets.token_hex(4)}@example.org", secrets.token_urlsafe(18)
        await until_answered(lambda: user.register(email, password))
        await until_answered(lambda: user.login(email, password))
        pids = {p.name: p.pid for p in stack.state.processes} | {"client": os.getpid()}
        groups = {name: [pid] for name, pid in pids.items() if name in MEASURED}
        groups["agents"] = [child.pid for child in stack.agents.values()]
        if groups["agents"]:
            pids["agent"] = groups["agents"][0]
        bench = Bench(stack, gateway, db, user, CpuMeter(groups), pids)
        results = StackResults()
        if "latency" in parts:
            print(f"\nlatency: {args.singles} single jobs after {args.warmup} warm-up ones", flush=True)
            spec = job_spec(args.cpu_cores, CLOCK_JOB, args.network)
            results.singles, results.single_stages = await run_singles(bench, args.singles, args.warmup, args.gap, spec)
        if "throughput" in parts:
            watching = Updates(user) if args.watch else None
            if watching is not None:
                watching.start()
            for index, count in enumerate(int(n) for n in args.jobs.split(",")):
                await wait_quiet(bench)
                print(f"\nthroughput: an array of {count:,} jobs", flush=True)
                profile = args.profile if index == 0 else None
                run = await run_array(
                    bench, count, args.cpu_cores, args.timeout, profile, args.profile_seconds, args.network
                )
                results.runs.append(run)
            if watching is not None:
                await wait_quiet(bench)
                print(f"  the owner's /v1/jobs/updates brought {watching.seen:,} updates", flush=True)
                await watching.close()
        if "cancel" in parts:
            for count in (int(n) for n in args.cancel_jobs.split(",")):
                await wait_quiet(bench)
                print(f"\ncancel: an array of {count:,} pending jobs", flush=True)
                cancelled = await run_cancel(bench, count)
                print(f"  submitted in {cancelled.submit_s:.2f} s, cancelled in {cancelled.cancel_s:.2f} s", flush=True)
                results.cancels.append(cancelled)
        if "after" in parts:
            for count in (int(n) for n in args.after_jobs.split(",")):
                await wait_quiet(bench)
                print(f"\nafter: a map of {count:,} jobs, its reduce, a chain of {args.chain}", flush=True)
                results.afters.append(await run_after(bench, count, args.chain, args.cpu_cores, args.timeout))
        return results
    finally:
        await user.aclose()
        await db.close()


async def wait_quiet(bench: Bench, seconds: float = 3.0) -> None:
    """Let the previous part's tail (event consumers, reputation updates) settle before measuring."""
    await asyncio.sleep(seconds)


def load_note(sample_s: float = 2.0) -> str:
    """The load average, and every process outside this benchmark's tree busy over ``sample_s``."""
    one, five, _ = os.getloadavg()
    ours = {os.getpid(), *(p.pid for p in psutil.Process().children(recursive=True))}
    ours |= {p.pid for p in psutil.Process().parents()}
    others = [p for p in psutil.process_iter(["pid", "cmdline"]) if p.pid not in ours]
    before = {}
    for p in others:
        with contextlib.suppress(psutil.Error):
            before[p.pid] = sum(p.cpu_times()[:2])
    time.sleep(sample_s)
    busy = []
    for p in others:
        with contextlib.suppress(psutil.Error):
            share = (sum(p.cpu_times()[:2]) - before.get(p.pid, 0.0)) / sample_s
            if share >= 0.05:
                command = " ".join(p.info["cmdline"] or [])[:80] or str(p.pid)
                busy.append(f"{command} ({100 * share:.0f} %)")
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min); busy elsewhere: {'; '.join(busy) or 'nothing'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--parts", default="placement,latency,throughput")
    parser.add_argument("--nodes", type=int, default=10_000, help="simulated nodes for the placement part")
    parser.add_argument("--decisions", type=int, default=10_000, help="requests per placement measurement")
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--cpu-cores", type=float, default=0.25, help="what each benchmark job requests")
    parser.add_argument("--singles", type=int, default=50, help="single jobs measured for latency, with each client")
    parser.add_argument("--warmup", type=int, default=5, help="single jobs run first and not counted")
    parser.add_argument("--no-push", action="store_true", help="the scheduler does not push assignments")
    parser.add_argument(
        "--no-place-at-submit", action="store_true", help="every job waits for a placement cycle, even a lone one"
    )
    parser.add_argument(
        "--no-prepare", action="store_true", help="nodes hear of a job placed at submit only once it commits"
    )
    parser.add_argument(
        "--agents-own-core", action="store_true",
        help="the agents on the last CPU, the platform and the bench on the others (as if on machines of their own)",
    )  # fmt: skip
    parser.add_argument(
        "--network", choices=("host", "none"), default=None, help="the network the jobs ask for (default: the node's)"
    )
    parser.add_argument("--gap", type=float, default=0.2, help="pause between single jobs (s)")
    parser.add_argument("--jobs", default="1000,10000", help="array sizes, one array run each, in order")
    parser.add_argument("--timeout", type=float, default=900.0, help="per array run (s)")
    parser.add_argument("--watch", action="store_true", help="the owner watches /v1/jobs/updates during the arrays")
    parser.add_argument("--cancel-jobs", default="10000,100000", help="pending arrays cancelled whole, in order")
    parser.add_argument("--after-jobs", default="2000", help="map arrays, each with a reduce after it, in order")
    parser.add_argument("--chain", type=int, default=30, help="jobs each after the one before, after the reduce")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy the first array run into this directory")
    parser.add_argument("--profile-seconds", type=float, default=20.0)
    parser.add_argument("--data-dir", type=Path, default=None, help="keep the stack's data and logs here (a new dir)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(f"before: {load_note()}", flush=True)
    if "placement" in parts:
        report_placement(run_placement(args.nodes, args.decisions), args.nodes)
    results = StackResults()
    if parts & {"latency", "throughput", "cancel", "after"}:
        with contextlib.ExitStack() as cleanup:
            data_dir = args.data_dir or Path(
                cleanup.enter_context(tempfile.TemporaryDirectory(prefix="fog-bench-jobs-"))
            )
            stack = BenchStack(data_dir, gateway_port=free_port())
            stack.push = not args.no_push
            stack.place_at_submit = not args.no_place_at_submit
            stack.prepare = not args.no_prepare
            if args.agents_own_core:
                cpus = sorted(os.sched_getaffinity(0))
                stack.agents_cpus = frozenset({cpus[-1]})
                os.sched_setaffinity(0, set(cpus[:-1]))  # inherited by the stack's processes
            try:
                stack.up()
                stack.wait_ready(120)
                results = asyncio.run(measure_stack(stack, args, parts))
            finally:
                stack.down()
    if results.singles:
        report_singles(results.singles, args.gap)
        report_stages("Single jobs", results.single_stages)
    if results.runs:
        report_arrays(results.runs, args.agents)
        for run in results.runs:
            report_stages(f"Array of {run.count:,}", run.stages)
    if results.cancels:
        report_cancels(results.cancels)
    if results.afters:
        report_afters(results.afters)
    if args.profile:
        for path in sorted(args.profile.glob("*.txt")):
            summarise_profile(path)
    print(f"\nafter: {load_note()}")


if __name__ == "__main__":
    main()
