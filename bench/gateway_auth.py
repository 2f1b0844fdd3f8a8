"""Gateway auth benchmark: token-verified GET beside unauthenticated GET, then login throughput.

Starts the dev stack the way ``fogctl dev up`` does (``fogctl.devstack.DevStack``: NATS,
PostgreSQL and every service as its own process, durable defaults, argon2id at its default
cost), with one change: the gateway's rate limits are raised far above what this client can
send, so the figures measure the request path rather than the limiter's refusals (the limiters
still run on every request; any 429 is counted and reported).

Then, from this process, N concurrent tasks share one ``httpx.AsyncClient`` (one keep-alive
connection each) and send requests back to back for a fixed time:

* ``GET /healthz``: no credential; the gateway answers from the process itself;
* ``GET /v1/me`` with ``Authorization: Bearer <access token>``: the token's EdDSA signature,
  claims and revocation are checked locally, then the per-principal limit, then the answer;
* ``POST /v1/auth/login`` with the right password, one registered user per worker: the gateway
  asks auth over NATS, auth verifies the argon2id hash (at most ``FOG_AUTH_MAX_CONCURRENT_HASHES``
  = 2 at once) and records the session in Postgres. With 2 workers nothing queues for a hash
  slot; with 16, 14 wait. No login fails, so the per-source lockout never engages.

The GETs run with 1 worker (no queueing anywhere: the path's latency) and with 16, and the
two paths alternate over ``--rounds`` short rounds so drift (CPU frequency, other load) hits
both alike; each figure is summed over the rounds. Latency is per request, from just before it
is sent to the end of its response, p50/p99 over every request. Each process's CPU time is read
before and after each measurement: on two cores one Python client cannot saturate the gateway,
so the gateway's CPU per request is the figure that compares the two paths' cost.
Usage: ``python bench/gateway_auth.py [--workers 1,16] [--login-workers 2,16] [--seconds 10] [--rounds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

from fog_shared.devservers import free_port
from fogctl.devstack import DevStack

PASSWORD = "correct horse battery staple"  # noqa: S105 - the benchmark's own throwaway accounts
#: far above what one Python client process on this machine can send (a few thousand per second)
GATEWAY_LIMITS = {
    "FOG_GATEWAY_RATE_PER_SOURCE_PER_S": "1000000",
    "FOG_GATEWAY_BURST_PER_SOURCE": "1000000",
    "FOG_GATEWAY_RATE_PER_PRINCIPAL_PER_S": "1000000",
    "FOG_GATEWAY_BURST_PER_PRINCIPAL": "1000000",
}
#: processes whose CPU time is reported, as named in the dev stack's state ("client" is us)
MEASURED = ("client", "gateway", "auth", "nats", "postgres")


class BenchStack(DevStack):
    """The dev stack with the gateway's rate limits raised. ``service_env`` drops every ``FOG_*``
    variable of the caller's environment, so they are added where the gateway is started."""

    #: whether auth was started with cheap hashing (the dev stack does not set it: the login
    #: figure is for argon2id at its default cost unless this says otherwise)
    cheap_hashing = False

    def spawn(self, svc: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        if svc == "auth":
            self.cheap_hashing = env.get("FOG_AUTH_INSECURE_CHEAP_HASHING", "").lower() in ("1", "true", "yes", "on")
        return super().spawn(svc, env | GATEWAY_LIMITS if svc == "gateway" else env)


class CpuMeter:
    """CPU seconds used so far by each measured process (Postgres with its backends), and by the
    whole machine: what the machine used beyond our processes is other load, a warning sign."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.processes = {name: psutil.Process(pid) for name, pid in pids.items()}

    def sample(self) -> dict[str, float]:
        used = {name: _cpu_seconds(process, name == "postgres") for name, process in self.processes.items()}
        machine = psutil.cpu_times()
        used["machine"] = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
        return used


def _cpu_seconds(process: psutil.Process, with_children: bool) -> float:
    total = 0.0
    for p in (process, *(process.children(recursive=True) if with_children else ())):
        try:
            times = p.cpu_times()
        except psutil.NoSuchProcess:  # a backend that ended between listing and reading
            continue
        total += times.user + times.system
    return total


@dataclass
class Result:
    name: str
    workers: int
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    #: CPU seconds each process (and the machine) used during the measurement
    cpu_s: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if status < 300)

    @property
    def per_s(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def cpu_ms_per_request(self, process: str) -> float:
        return 1000 * self.cpu_s.get(process, 0.0) / max(1, self.ok)

    def row(self) -> str:
        lat = sorted(self.latencies_ms)
        p50 = statistics.median(lat) if lat else None
        p99 = lat[max(0, int(len(lat) * 0.99) - 1)] if lat else None
        others = {s: n for s, n in sorted(self.statuses.items()) if s >= 300}
        return (
            f"{self.name:<22} {self.workers:>7} {self.ok:>8} {self.per_s:>8.0f} "
            f"{_ms(p50):>8} {_ms(p99):>8} {self.statuses.get(429, 0):>5}  {others or '-'}"
        )

    def cpu_row(self) -> str:
        ours = sum(self.cpu_s.get(name, 0.0) for name in MEASURED)
        shares = [self.cpu_s.get(name, 0.0) for name in MEASURED] + [self.cpu_s.get("machine", 0.0) - ours]
        percent = " ".join(f"{100 * used / self.seconds:>8.0f}" for used in shares)
        per_request = " ".join(f"{self.cpu_ms_per_request(name):>9.2f}" for name in ("gateway", "auth"))
        return f"{self.name:<22} {self.workers:>7} {percent}   {per_request}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


Send = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]


async def hammer(http: httpx.AsyncClient, cpu: CpuMeter, result: Result, seconds: float, send: Send) -> None:
    """``result.workers`` workers sending back to back for ``seconds``; adds to ``result``."""
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = await send(http, n)
            await response.aread()
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
            result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1

    cpu_before = cpu.sample()
    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(result.workers)))
    result.seconds += time.monotonic() - started
    for name, used in cpu.sample().items():
        result.cpu_s[name] = result.cpu_s.get(name, 0.0) + used - cpu_before[name]


@dataclass
class Results:
    #: (unauthenticated, token-verified) at each concurrency, in the order measured
    pairs: list[tuple[Result, Result]]
    #: one per login concurrency
    logins: list[Result]


async def measure(
    gateway_url: str,
    cpu: CpuMeter,
    concurrencies: list[int],
    login_concurrencies: list[int],
    seconds: float,
    rounds: int,
) -> Results:
    login_workers = max(login_concurrencies)
    limits = httpx.Limits(max_connections=max(*concurrencies, login_workers), max_keepalive_connections=None)
    # Logins queue for the two argon2id slots: allow more than the gateway's own 5 s call timeout.
    async with httpx.AsyncClient(base_url=gateway_url, limits=limits, timeout=30.0) as http:
        # One account per login worker: concurrent logins never contend for one account's row.
        accounts = [{"email": f"bench{n}@example.org", "password": PASSWORD} for n in range(login_workers)]
        for account in accounts:
            created = await http.post("/v1/auth/register", json=account)
            assert created.status_code == 201, created.text
        login = await http.post("/v1/auth/login", json=accounts[0])
        assert login.status_code == 200, login.text
        bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}

        async def healthz(client: httpx.AsyncClient, _: int) -> httpx.Response:
            return await client.get("/healthz")

        async def me(client: httpx.AsyncClient, _: int) -> httpx.Response:
            return await client.get("/v1/me", headers=bearer)

        async def log_in(client: httpx.AsyncClient, n: int) -> httpx.Response:
            return await client.post("/v1/auth/login", json=accounts[n])

        # Warm-up, not counted: connections opened, code paths and caches warm.
        for send in (healthz, me):
            await hammer(http, cpu, Result("warm-up", max(concurrencies)), 2.0, send)
        pairs = [(Result("GET /healthz", n), Result("GET /v1/me (bearer)", n)) for n in concurrencies]
        # Short alternations: throughput drifts by ±15 % from one second to the next here (one
        # client process at 100 % of a core), so both paths must sample the same moments.
        for _ in range(rounds):
            for anonymous, verified in pairs:
                await hammer(http, cpu, anonymous, seconds / rounds, healthz)
                await hammer(http, cpu, verified, seconds / rounds, me)
        logins = [Result("POST /v1/auth/login", n) for n in login_concurrencies]
        for result in logins:
            await hammer(http, cpu, result, seconds, log_in)
    return Results(pairs, logins)


def report(results: Results, cheap_hashing: bool) -> None:
    rows = [r for pair in results.pairs for r in pair] + results.logins
    print(f"{'request':<22} {'workers':>7} {'ok':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'429':>5}  other")
    for r in rows:
        print(r.row())
    print("\nCPU during each measurement, % of one core (the machine has 2), and CPU ms per successful request:")
    names = " ".join(f"{name:>8}" for name in (*MEASURED, "other"))
    print(f"{'request':<22} {'workers':>7} {names}   {'gateway':>9} {'auth':>9}")
    for r in rows:
        print(r.cpu_row())
    print("\ntoken-verified / unauthenticated:")
    for anonymous, verified in results.pairs:
        if anonymous.ok and verified.ok:
            cost = verified.cpu_ms_per_request("gateway") / anonymous.cpu_ms_per_request("gateway")
            print(
                f"  {anonymous.workers:>2} workers: throughput {verified.per_s / anonymous.per_s:.2f}, "
                f"gateway CPU per request {cost:.2f}"
            )
    hashing = "FOG_AUTH_INSECURE_CHEAP_HASHING: minimal" if cheap_hashing else "default"
    logins = ", ".join(f"{r.per_s:.1f} with {r.workers} workers" for r in results.logins)
    print(f"logins/s: {logins} (argon2id at its {hashing} cost)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--workers", default="1,16", help="concurrent requests for the two GETs, one pair of measurements each"
    )
    parser.add_argument("--login-workers", default="2,16", help="concurrent logins, one measurement each")
    parser.add_argument("--seconds", type=float, default=10.0, help="per measurement (the GETs: over all rounds)")
    parser.add_argument("--rounds", type=int, default=10, help="alternations of the two GETs")
    args = parser.parse_args()
    concurrencies = [int(n) for n in args.workers.split(",")]
    login_concurrencies = [int(n) for n in args.login_workers.split(",")]
    with tempfile.TemporaryDirectory(prefix="fog-bench-") as tmp:
        stack = BenchStack(Path(tmp), gateway_port=free_port())
        try:
            state = stack.up()
            stack.wait_ready(120)
            pids = {p.name: p.pid for p in state.processes} | {"client": os.getpid()}
            cpu = CpuMeter({name: pids[name] for name in MEASURED})
            results = asyncio.run(
                measure(state.gateway_url, cpu, concurrencies, login_concurrencies, args.seconds, args.rounds)
            )
        finally:
            stack.down()
    report(results, stack.cheap_hashing)


if __name__ == "__main__":
    main()
