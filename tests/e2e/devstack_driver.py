"""Driving a dev stack from e2e tests: `fogctl dev up` as a process, its status, its readiness.

Importable from the e2e tests (``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from fog_shared.devservers import free_port
from fog_shared.testing.waiting import wait_until
from fogctl.devstack import probe_ready

SERVICES = ("auth", "registry", "scheduler", "messaging", "gateway")
FOGCTL = [sys.executable, "-m", "fogctl"]


async def fogctl(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    environment = None if env is None else {**os.environ, **env}
    proc = await asyncio.create_subprocess_exec(*FOGCTL, *args, stdout=asyncio.subprocess.PIPE, env=environment)
    stdout, _ = await proc.communicate()
    return proc.returncode or 0, stdout.decode()


async def status(data_dir: Path) -> dict[str, Any]:
    _, stdout = await fogctl("dev", "status", "--json", "--dir", str(data_dir))
    return json.loads(stdout) if stdout.strip() else {"running": False, "processes": []}


def launch(data_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """`fogctl dev up` as a newcomer runs it, with its own servers and a free gateway port."""
    env = {k: v for k, v in os.environ.items() if k not in ("FOG_NATS_URL", "FOG_DATABASE_URL")}
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

    def __init__(self, data_dir: Path, *options: str) -> None:
        self.dir = data_dir
        self.supervisor = launch(data_dir, *options)
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

    def stop(self) -> None:
        for child in [*self.extra, self.supervisor]:
            if child.poll() is None:
                child.send_signal(signal.SIGINT if child is self.supervisor else signal.SIGTERM)
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()


def _serve(module: str, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", module, "serve"], env=env, stdout=log, stderr=log)
