"""Driving a dev stack from e2e tests: `fogctl dev up` as a process, its status, its readiness.

The suite picks its target from the environment. By default each module starts its own local
dev stack (:class:`RunningStack`). With ``FOG_E2E_GATEWAY_URL`` set (``make e2e-kind`` sets it),
the same tests run against that deployed Fog through its gateway (:class:`RemoteStack`), logged
in as the first admin given by ``FOG_E2E_ADMIN_EMAIL`` and ``FOG_E2E_ADMIN_PASSWORD``; agents the
tests start run on this machine and join it as nodes. Tests marked ``local_stack`` need more than
a gateway (the stack's processes, logs, NATS or Postgres) and are skipped there.

Importable from the e2e tests (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from fog_client import FogClient
from fog_shared.devservers import free_port
from fog_shared.pg.roles import ServiceDatabase
from fog_shared.testing.waiting import wait_until
from fogctl.devstack import DEV_AGENT_ENVIRONMENT, DevStack, probe_ready
from fogctl.session import login_and_save

SERVICES = ("auth", "registry", "scheduler", "messaging", "gateway")
#: a deployed Fog to run the suite against instead of local dev stacks
TARGET_URL = os.environ.get("FOG_E2E_GATEWAY_URL", "").rstrip("/") or None
#: tells this run's accounts apart from earlier runs' on a deployment that outlives them
RUN = secrets.token_hex(4)


def email(name: str) -> str:
    """A test account's address: unique to this run when the target is a deployed Fog."""
    return f"{name}+{RUN}@example.org" if TARGET_URL else f"{name}@example.org"


FOGCTL = [sys.executable, "-m", "fogctl"]
AGENT = [sys.executable, "-m", "fog_agent"]


async def fogctl(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    environment = None if env is None else {**os.environ, **env}
    proc = await asyncio.create_subprocess_exec(*FOGCTL, *args, stdout=asyncio.subprocess.PIPE, env=environment)
    stdout, _ = await proc.communicate()
    return proc.returncode or 0, stdout.decode()


async def status(data_dir: Path) -> dict[str, Any]:
    _, stdout = await fogctl("dev", "status", "--json", "--dir", str(data_dir))
    return json.loads(stdout) if stdout.strip() else {"running": False, "processes": []}


def launch(data_dir: Path, *extra: str, servers: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """`fogctl dev up` as a newcomer runs it, with its own servers and a free gateway port; or on the
    NATS and Postgres given in ``servers`` (``FOG_NATS_URL``, ``FOG_DATABASE_URL``), which a test owns."""
    env = {k: v for k, v in os.environ.items() if k not in ("FOG_NATS_URL", "FOG_DATABASE_URL")}
    env |= servers or {}
    env["FOG_GATEWAY_PORT"] = str(free_port())
    env["FOG_CONFIG_DIR"] = str(data_dir / "fogctl")  # where `dev up` logs fogctl in: not the user's own
    log = (data_dir / "fogctl.log").open("wb")
    command = [*FOGCTL, "dev", "up", "--dir", str(data_dir), *extra]
    return subprocess.Popen(command, env=env, stdout=log, stderr=log)


async def all_ready(data_dir: Path) -> dict[str, Any] | None:
    state = await status(data_dir)
    names = {p["name"] for p in state["processes"]}
    every_process = set(SERVICES) <= names and all(p["ready"] for p in state["processes"])
    ready = state["running"] and state.get("up") and every_process
    return state if ready else None


class RunningStack:
    """A `fogctl dev up` that a test module shares: started once, stopped with Ctrl-C after."""

    def __init__(self, data_dir: Path, *options: str, servers: dict[str, str] | None = None) -> None:
        self.dir, self.servers = data_dir, servers
        self.supervisor = launch(data_dir, *options, servers=servers)
        self.extra: list[subprocess.Popen[bytes]] = []
        self.state: dict[str, Any] = {}

    async def ready(self) -> dict[str, Any]:
        state = await wait_until(lambda: all_ready(self.dir), timeout=60, interval=0.5, what="the whole stack ready")
        self.state = state
        return state

    def process(self, name: str) -> dict[str, Any]:
        return next(p for p in self.state["processes"] if p["name"] == name)

    async def extra_gateway(self, **settings: str) -> str:
        """Another gateway process on the stack's NATS (a second replica), with these settings."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOG_")}
        env |= {"FOG_GATEWAY_NATS_URL": self.state["nats_url"], "FOG_GATEWAY_HTTP_PORT": str(port)}
        env |= {f"FOG_GATEWAY_{key.upper()}": value for key, value in settings.items()}
        self.extra.append(_serve("fog_gateway", env, self.dir / f"gateway-{port}.log"))
        url = f"http://127.0.0.1:{port}"
        await wait_until(lambda: asyncio.to_thread(probe_ready, url), timeout=30, what=f"extra gateway {url}")
        return url

    async def extra_scheduler(self) -> str:
        """Another scheduler process (a standby replica) with the stack's database role, on a stack
        whose NATS and Postgres the test gave it (``servers``: their URLs carry no per-service users)."""
        if self.servers is None:
            raise RuntimeError("an extra scheduler needs a stack on servers the test owns")
        dev, port = DevStack(self.dir), free_port()
        passwords = dev.secrets()
        db = ServiceDatabase(
            "scheduler", "fog_scheduler", passwords["scheduler"], "fog_scheduler_owner", passwords["scheduler_owner"]
        )
        env = dev.service_env("scheduler", self.servers["FOG_NATS_URL"], self.servers["FOG_DATABASE_URL"], db, port)
        self.extra.append(_serve("fog_scheduler", env, self.dir / f"scheduler-{port}.log"))
        url = f"http://127.0.0.1:{port}"
        await wait_until(lambda: asyncio.to_thread(probe_ready, url), timeout=30, what=f"extra scheduler {url}")
        return url

    def stop(self) -> None:
        for child in [*self.extra, self.supervisor]:
            if child.poll() is None:
                child.send_signal(signal.SIGINT if child is self.supervisor else signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


class RemoteStack(RunningStack):
    """A deployed Fog reached through its gateway only: what the tests not marked
    ``local_stack`` use of a :class:`RunningStack` (its gateway URL, the first admin's credentials
    file, fogctl logged in as that admin under ``dir / "fogctl"``), and, as `fogctl dev up` gives
    a local stack, two agents of this machine joined as nodes labelled ``dev=true``."""

    def __init__(self, data_dir: Path, gateway_url: str) -> None:
        self.dir, self.gateway_url, self.servers = data_dir, gateway_url, None
        self.extra, self.state = [], {}
        self.supervisor = None  # type: ignore[assignment]

    async def ready(self) -> dict[str, Any]:
        if self.state:
            return self.state
        url = self.gateway_url
        await wait_until(lambda: asyncio.to_thread(probe_ready, url), timeout=60, interval=1, what=f"{url} ready")
        admin = {"email": os.environ["FOG_E2E_ADMIN_EMAIL"], "password": os.environ["FOG_E2E_ADMIN_PASSWORD"]}
        credentials = self.dir / "admin.json"
        credentials.touch(mode=0o600)
        credentials.write_text(json.dumps(admin))
        await asyncio.to_thread(login_and_save, url, admin["email"], admin["password"], self.dir / "fogctl")
        await self._start_agents()
        self.state = {"gateway_url": url, "admin_credentials": str(credentials), "processes": [], "running": True}
        return self.state

    async def _start_agents(self) -> None:
        provider = {"email": email(f"dev-provider-{secrets.token_hex(3)}"), "password": secrets.token_urlsafe(18)}
        async with FogClient(self.gateway_url) as fog:
            await fog.register(provider["email"], provider["password"], roles=("user", "provider"))
        for name in ("agent-1", "agent-2"):
            self.extra.append(await asyncio.to_thread(self._agent, name, provider))

    def _agent(self, name: str, provider: dict[str, str]) -> subprocess.Popen[bytes]:
        state_dir = self.dir / "agents" / name
        subprocess.run(
            [*AGENT, "join", "--gateway", self.gateway_url, "--name", f"dev-{name}-{RUN}", "--label", "dev=true",
             "--email", provider["email"], "--password-stdin", "--state-dir", str(state_dir)],
            input=provider["password"].encode(), capture_output=True, check=True, timeout=60,
        )  # fmt: skip
        log = (self.dir / f"{name}.log").open("ab")
        environment = {**os.environ, **DEV_AGENT_ENVIRONMENT}  # as `fogctl dev up` runs its agents
        return subprocess.Popen([*AGENT, "run", "--state-dir", str(state_dir)], stdout=log, stderr=log, env=environment)

    def process(self, name: str) -> dict[str, Any]:
        raise RuntimeError(f"a deployed Fog's {name} is not a process of this machine: mark the test local_stack")

    def stop(self) -> None:
        """Only this machine's agents: the deployment outlives the suite."""
        for agent in self.extra:
            if agent.poll() is None:
                agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()


def heartbeat_interval(local_s: float) -> float:
    """The nodes' heartbeat interval of the target: ``local_s`` for the local stacks (each module
    starts its own with ``--heartbeat-interval``), the deployment's own otherwise."""
    return float(os.environ.get("FOG_E2E_HEARTBEAT_INTERVAL_S", "5")) if TARGET_URL else local_s


def open_stack(data_dir: Path, *options: str) -> RunningStack:
    """The suite's target for one module: the deployed Fog named by ``FOG_E2E_GATEWAY_URL``, or a
    new local dev stack started with these ``fogctl dev up`` options."""
    return RemoteStack(data_dir, TARGET_URL) if TARGET_URL else RunningStack(data_dir, *options)


def _serve(module: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", module, "serve"], env=env, stdout=log, stderr=log)
