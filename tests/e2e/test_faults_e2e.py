"""The platform rides out its parts dying under load: a dev stack on a NATS and a Postgres this module
owns, so that the test can kill them and start them again, with real agents running a job array.

Heartbeats every 3 s here: a node is declared down after 12 s of silence and an agent stops its jobs
after 9 s without word from its gateway, both far longer than any of these outages should last, so a
job that runs twice shows a fault, not a slow machine.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from devstack_driver import RunningStack, email

from fog_client import ApiError, ArraySummary, Constraints, FogClient, JobArray, JobSpec, Resources
from fog_shared.devservers import NatsServer, PostgresServer, free_ports
from fog_shared.testing.waiting import wait_until
from fogctl.devstack import probe_ready

pytestmark = [pytest.mark.e2e, pytest.mark.local_stack]
PASSWORD = "a long and unguessable password"
JOBS = 800


class Servers:
    """The stack's NATS and Postgres, which the test kills and starts again."""

    def __init__(self, directory: Path) -> None:
        nats_port, monitor_port, postgres_port = free_ports(3)  # chosen together: never one twice
        self.nats = NatsServer(directory / "nats", nats_port, monitor_port)
        self.postgres = PostgresServer(directory / "postgres", port=postgres_port)

    def start(self) -> None:
        self.nats.start()
        self.postgres.start()

    def stop(self) -> None:
        self.nats.stop()
        self.postgres.stop()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    owned = Servers(tmp_path_factory.mktemp("fault-servers"))
    owned.start()
    try:
        yield owned
    finally:
        owned.stop()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, servers: Servers) -> Iterator[RunningStack]:
    on_them = {"FOG_NATS_URL": servers.nats.url, "FOG_DATABASE_URL": servers.postgres.superuser_dsn}
    stack = RunningStack(tmp_path_factory.mktemp("faults-e2e"), "--heartbeat-interval", "3", servers=on_them)
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
async def stack(running: RunningStack) -> RunningStack:
    await running.ready()
    return running


async def not_ready(url: str) -> bool:
    return not await asyncio.to_thread(probe_ready, url)


async def test_a_gateway_crash_and_nats_and_postgres_restarts_during_an_array_lose_no_job_and_run_none_twice(
    stack: RunningStack, servers: Servers
) -> None:
    fog, array = await _array_of_true(stack, "fay")
    scheduler_url = stack.process("scheduler")["url"]

    async def kill_the_gateway() -> None:
        psutil.Process(stack.process("gateway")["pid"]).kill()  # the dev supervisor starts it again

    async def restart_nats() -> None:
        servers.nats.kill()
        await wait_until(lambda: not_ready(scheduler_url), timeout=30, what="the scheduler without NATS")
        await asyncio.to_thread(servers.nats.start)

    async def restart_postgres() -> None:
        servers.postgres.kill()
        await wait_until(lambda: not_ready(scheduler_url), timeout=30, what="the scheduler without Postgres")
        await asyncio.to_thread(servers.postgres.start)

    def succeeded(count: int) -> Callable[[], Awaitable[ArraySummary | None]]:
        return lambda: _succeeded_at_least(fog, array.array_id, count)

    faults: list[Callable[[], Awaitable[None]]] = [kill_the_gateway, restart_nats, restart_postgres]
    for done, fault in enumerate(faults, start=1):
        count = done * JOBS // 4
        await wait_until(succeeded(count), timeout=120, interval=0.2, what=f"{count} jobs done before the next fault")
        await fault()
    await _every_job_succeeded_on_its_first_attempt(fog, array.array_id)


async def test_the_placing_scheduler_killed_during_an_array_its_standby_places_the_rest_none_lost_or_run_twice(
    stack: RunningStack,
) -> None:
    """What a deployment with two scheduler replicas relies on: the one that places jobs dies
    (``kill -9``), another takes the placement over, and the array ends as if nothing had happened."""
    standby = await stack.extra_scheduler()
    placing = stack.process("scheduler")
    await wait_until(lambda: _leads(placing["url"]), timeout=30, what="the first scheduler placing")
    assert not await _leads(standby), "one replica places at a time"
    fog, array = await _array_of_true(stack, "gus")

    def succeeded(count: int) -> Callable[[], Awaitable[ArraySummary | None]]:
        return lambda: _succeeded_at_least(fog, array.array_id, count)

    await wait_until(succeeded(JOBS // 4), timeout=120, interval=0.2, what="a quarter of the jobs done")
    psutil.Process(placing["pid"]).kill()  # the dev supervisor starts it again (on the same port)

    async def another_places() -> bool:
        # The standby, unless the restarted process is first to try for the lead once it is free.
        return await _leads(standby) or await _leads(placing["url"])

    await wait_until(another_places, timeout=30, what="another replica placing")
    await _every_job_succeeded_on_its_first_attempt(fog, array.array_id)


async def _leads(scheduler_url: str) -> bool:
    """What the replica's ``fog_scheduler_leading`` gauge says (an operator's view of who places)."""
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            metrics = (await http.get(f"{scheduler_url}/metrics")).text
    except httpx.HTTPError:
        return False  # not serving (yet)
    return any(line.split() == ["fog_scheduler_leading", "1.0"] for line in metrics.splitlines())


async def _array_of_true(stack: RunningStack, name: str) -> tuple[FogClient, JobArray]:
    """A new user's array of ``JOBS`` jobs running ``true`` on the stack's agents."""
    fog = FogClient(stack.state["gateway_url"])
    await fog.register(email(name), PASSWORD)
    await fog.login(email(name), PASSWORD)
    dev_nodes = Constraints(labels={"dev": "true"})
    spec = JobSpec(command=["true"], resources=Resources(cpu_cores=0.25), constraints=dev_nodes)
    return fog, await fog.submit_array(spec, JOBS)


async def _every_job_succeeded_on_its_first_attempt(fog: FogClient, array_id: str) -> None:
    summary = await wait_until(lambda: _succeeded_at_least(fog, array_id, JOBS), timeout=240, interval=1,
                               what="every job done")  # fmt: skip
    assert summary is not None
    assert summary.statuses == {"succeeded": JOBS}, "none lost"
    attempts = [job.attempt async for job in fog.iter_jobs(array_id=array_id, limit=1000)]
    assert len(attempts) == JOBS
    assert set(attempts) == {1}, "none ran again: no node was taken for down, no job lost or killed"


async def _succeeded_at_least(fog: FogClient, array_id: str, count: int) -> ArraySummary | None:
    try:
        summary = await fog.array_summary(array_id)
    except (ApiError, httpx.HTTPError) as exc:
        if isinstance(exc, ApiError) and exc.status != 503:
            raise
        return None  # the gateway, or the scheduler behind it, is restarting
    return summary if summary.statuses.get("succeeded", 0) >= count else None
