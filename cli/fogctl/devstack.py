"""The local dev stack: NATS, PostgreSQL and every service as separate processes.

Used by ``fogctl dev up`` (and so ``make run``) and by the e2e tests. NATS and PostgreSQL come
from wheels unless ``FOG_NATS_URL`` / ``FOG_DATABASE_URL`` (a superuser DSN) point at servers
already running. Everything lives under one directory (``.fog/dev`` by default): server data,
a log file per process, ``secrets.json`` (database role passwords, mode 0600),
``admin-credentials.json`` (the first admin's e-mail and random password, mode 0600) and
``state.json`` for ``status``/``down``.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import nats

from fog_client import ApiError, FogClient
from fog_shared.bus.permissions import PROVISIONER, Permissions, all_permissions, password_variable
from fog_shared.bus.permissions import render as render_nats_users
from fog_shared.bus.provision import provision
from fog_shared.bus.topology import Topology
from fog_shared.devservers import NatsServer, Ports, PostgresServer
from fog_shared.pg.roles import ServiceDatabase, ensure_database, provision_service
from fog_shared.subjects import inbox_prefix

DATABASE = "fog"
DB_SERVICES = ("auth", "registry", "scheduler", "messaging")
SERVICES = (*DB_SERVICES, "gateway")
#: the developer's own NATS user on the dev stack: every subject. Connections without credentials
#: (the plain ``nats_url`` of ``fogctl dev status``) act as it; each service logs in as its own
#: user, with the permissions Kubernetes gives it (``fog_shared.bus.permissions``).
DEV_NATS_USER = "dev"
NATS_USERS = (*SERVICES, PROVISIONER, DEV_NATS_USER)
#: ports tried first; taken ones are replaced by free ones (a NATS or Postgres may already run)
DEFAULT_PORTS = {"nats": 14222, "nats-monitor": 18222, "postgres": 15432, "gateway": 8080,
                 "auth": 18081, "registry": 18082, "scheduler": 18083, "messaging": 18084,
                 "gateway-metrics": 18090}  # fmt: skip


@dataclass
class Process:
    name: str
    pid: int
    url: str
    log: str
    ready: bool = False


@dataclass
class StackState:
    supervisor_pid: int
    data_dir: str
    nats_url: str
    database_dsn_redacted: str
    gateway_url: str
    processes: list[Process] = field(default_factory=list)
    #: the first admin's e-mail and password (readable only by this user)
    admin_credentials: str = ""
    #: everything started, the agents joined and fogctl logged in: the stack is usable
    up: bool = False
    #: the NATS server's monitoring endpoint (``/connz?auth=true`` shows who is logged in as whom)
    nats_monitor_url: str = ""
    #: the gateway's ``/metrics``, apart from its API port (the other services serve theirs on their own port)
    gateway_metrics_url: str = ""

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def read(cls, path: Path) -> StackState:
        raw = json.loads(path.read_text())
        raw["processes"] = [Process(**p) for p in raw["processes"]]
        return cls(**raw)


def default_dir() -> Path:
    return Path(os.environ.get("FOG_DEV_DIR", ".fog/dev")).resolve()


ADMIN_EMAIL = "admin@fog.localhost"
PROVIDER_EMAIL = "provider@fog.localhost"
#: local agents `fogctl dev up` starts, as nodes of the dev provider account
DEV_AGENTS = ("agent-1", "agent-2")
#: The dev stack's agents run their owner's own jobs on their owner's machine: without Landlock, and not root,
#: they may still run jobs as their own user (``fog_agent.sandbox.refuse_unconfined``).
DEV_AGENT_ENVIRONMENT = {"FOG_AGENT_ALLOW_UNCONFINED_JOBS": "yes"}
SIGNING_KEY_PASSPHRASE = "auth_signing_key_passphrase"  # noqa: S105 - the name of a secret in the file


def _secret_file(path: Path, make: Callable[[], dict[str, str]]) -> dict[str, str]:
    """Secrets for this data dir: made once, written readable only by this user from the start."""
    if path.exists():
        loaded: dict[str, str] = json.loads(path.read_text())
        return loaded
    values = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(values, out, indent=2)
    return values


def _service_secrets() -> dict[str, str]:
    values = {svc: secrets.token_urlsafe(24) for svc in DB_SERVICES}
    values |= {f"{svc}_owner": secrets.token_urlsafe(24) for svc in DB_SERVICES}
    return values | {SIGNING_KEY_PASSPHRASE: secrets.token_urlsafe(24)}


def _add_secrets(path: Path, values: dict[str, str]) -> None:
    """Secrets added to a data dir's file (one from before they existed), still owner-only."""
    stored: dict[str, str] = json.loads(path.read_text())
    fresh = path.with_suffix(".new")
    fresh.unlink(missing_ok=True)
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(stored | values, out, indent=2)
    fresh.replace(path)


def nats_users_config() -> str:
    """The ``authorization`` block of the dev stack's NATS server: the services' users as on
    Kubernetes, plus the developer's, which anonymous connections get."""
    dev = Permissions(DEV_NATS_USER, (">",), (">",))
    return render_nats_users([*all_permissions(), dev]) + f"no_auth_user: {DEV_NATS_USER}\n"


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in this process's environment meanwhile (a child started now inherits them)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _first_admin() -> dict[str, str]:
    return {"email": ADMIN_EMAIL, "password": secrets.token_urlsafe(18)}


def _dev_provider() -> dict[str, str]:
    return {"email": PROVIDER_EMAIL, "password": secrets.token_urlsafe(18)}


class DevStack:
    def __init__(
        self, data_dir: Path | None = None, *, gateway_port: int | None = None, heartbeat_interval_s: float = 5.0
    ) -> None:
        self.dir = data_dir or default_dir()
        self.heartbeat_interval_s = heartbeat_interval_s
        #: the local agents: not services, so one exiting does not stop the stack
        self.agents: dict[str, subprocess.Popen[bytes]] = {}
        self.envs: dict[str, dict[str, str]] = {}
        self.restarts: dict[str, int] = {}
        self.logs = self.dir / "logs"
        self.gateway_port = gateway_port or int(os.environ.get("FOG_GATEWAY_PORT", DEFAULT_PORTS["gateway"]))
        self.nats_server: NatsServer | None = None
        self.pg_server: PostgresServer | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.state: StackState | None = None
        #: where the gateway serves its metrics (None: a free port it picks, as the gateway does by default)
        self.gateway_metrics_port: int | None = None

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def admin_file(self) -> Path:
        return self.dir / "admin-credentials.json"

    def secrets(self) -> dict[str, str]:
        """Database role passwords and the signing-key passphrase, generated on the first start."""
        return _secret_file(self.dir / "secrets.json", _service_secrets)

    def admin(self) -> dict[str, str]:
        """The first admin's e-mail and password, generated on the first start of this data dir."""
        return _secret_file(self.admin_file, _first_admin)

    def nats_passwords(self) -> dict[str, str]:
        """Each NATS user's password, made on the first start that needed it."""
        stored = self.secrets()
        missing = {f"nats_{user}": secrets.token_hex(16) for user in NATS_USERS if f"nats_{user}" not in stored}
        if missing:
            _add_secrets(self.dir / "secrets.json", missing)
        return {user: (stored | missing)[f"nats_{user}"] for user in NATS_USERS}

    def nats_url_of(self, user: str, nats_url: str) -> str:
        """How ``user`` connects: with its credentials to the stack's own server; as given to one
        the developer runs (``FOG_NATS_URL``), whose users are the developer's business."""
        if self.nats_server is None:
            return nats_url
        return f"nats://{user}:{self.nats_passwords()[user]}@{nats_url.removeprefix('nats://')}"

    def provider(self) -> dict[str, str]:
        """The dev provider account that owns the local agents' nodes."""
        return _secret_file(self.dir / "provider-credentials.json", _dev_provider)

    # -- servers --------------------------------------------------------------------------
    def start_servers(self) -> tuple[str, str]:
        """NATS URL and superuser DSN, starting local servers where none is configured."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        nats_url = os.environ.get("FOG_NATS_URL")
        if not nats_url:
            ports = Ports()
            self.nats_server = NatsServer(
                self.dir / "nats",
                port=ports.pick(DEFAULT_PORTS["nats"]),
                monitor_port=ports.pick(DEFAULT_PORTS["nats-monitor"]),
                extra_config=nats_users_config(),
            )
            self.nats_server.data_dir.mkdir(exist_ok=True)
            # The server resolves each user's $NATS_PASSWORD_<USER> from its environment.
            with _environment({password_variable(u): p for u, p in self.nats_passwords().items()}):
                self.nats_server.start()
            nats_url = self.nats_server.url
        admin_dsn = os.environ.get("FOG_DATABASE_URL")
        if not admin_dsn:
            self.pg_server = PostgresServer(self.dir / "postgres", port=Ports().pick(DEFAULT_PORTS["postgres"]))
            self.pg_server.data_dir.mkdir(exist_ok=True)
            self.pg_server.start()
            admin_dsn = self.pg_server.superuser_dsn
        return nats_url, admin_dsn

    async def provision(self, nats_url: str, admin_dsn: str) -> dict[str, ServiceDatabase]:
        """Database, schemas, roles, streams and consumers: idempotent, safe on every start."""
        passwords = self.secrets()
        admin = await asyncpg.connect(admin_dsn)
        try:
            await ensure_database(admin, DATABASE)
        finally:
            await admin.close()
        admin = await asyncpg.connect(_with_database(admin_dsn, DATABASE))
        dbs = {}
        try:
            for svc in DB_SERVICES:
                dbs[svc] = ServiceDatabase(
                    svc, f"fog_{svc}", passwords[svc], f"fog_{svc}_owner", passwords[f"{svc}_owner"]
                )
                await provision_service(admin, DATABASE, dbs[svc])
        finally:
            await admin.close()
        nc = await nats.connect(self.nats_url_of(PROVISIONER, nats_url), inbox_prefix=inbox_prefix(PROVISIONER))
        try:
            await provision(nc.jetstream(), Topology())
        finally:
            await nc.close()
        return dbs

    # -- services -------------------------------------------------------------------------
    def service_env(
        self, svc: str, nats_url: str, admin_dsn: str, db: ServiceDatabase | None, port: int
    ) -> dict[str, str]:
        prefix = f"FOG_{svc.upper()}_"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FOG_")}
        env |= {f"{prefix}NATS_URL": self.nats_url_of(svc, nats_url), f"{prefix}HTTP_PORT": str(port),
                f"{prefix}HTTP_HOST": "127.0.0.1"}  # fmt: skip
        if svc == "registry":
            env[f"{prefix}HEARTBEAT_INTERVAL_S"] = str(self.heartbeat_interval_s)
        if svc == "gateway":
            env[f"{prefix}NODE_HEARTBEAT_INTERVAL_S"] = str(self.heartbeat_interval_s)
            if self.gateway_metrics_port is not None:
                env[f"{prefix}METRICS_PORT"] = str(self.gateway_metrics_port)
        if svc == "auth":
            admin = self.admin()
            env[f"{prefix}BOOTSTRAP_ADMIN_EMAIL"] = admin["email"]
            env[f"{prefix}BOOTSTRAP_ADMIN_PASSWORD"] = admin["password"]
            if passphrase := self.secrets().get(SIGNING_KEY_PASSPHRASE):  # data dirs from before it have none
                env[f"{prefix}SIGNING_KEY_PASSPHRASE"] = passphrase
        if db is not None:
            env[f"{prefix}DATABASE_URL"] = _with_database(_with_user(admin_dsn, db.role, db.password), DATABASE)
            env[f"{prefix}MIGRATE_DATABASE_URL"] = _with_database(
                _with_user(admin_dsn, db.owner_role, db.owner_password), DATABASE
            )
        return env

    def migrate(self, envs: dict[str, dict[str, str]]) -> None:
        for svc in DB_SERVICES:
            subprocess.run([sys.executable, "-m", f"fog_{svc}", "migrate"], env=envs[svc], check=True,
                           stdout=subprocess.DEVNULL, stderr=self._log(svc))  # fmt: skip

    def _log(self, name: str) -> Any:
        return (self.logs / f"{name}.log").open("ab")

    def spawn(self, svc: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.envs[svc] = env
        log = self._log(svc)
        child = subprocess.Popen(
            [sys.executable, "-m", f"fog_{svc}", "serve"], env=env, stdout=log, stderr=log, start_new_session=True
        )
        self.children[svc] = child
        return child

    def up(self) -> StackState:
        nats_url, admin_dsn = self.start_servers()
        dbs = asyncio.run(self.provision(nats_url, admin_dsn))
        chosen = Ports()  # the servers listen already: only the services' ports may meet
        ports = {"gateway": chosen.pick(self.gateway_port)}  # first: the one its user asked for
        ports |= {svc: chosen.pick(DEFAULT_PORTS[svc]) for svc in DB_SERVICES}
        self.gateway_metrics_port = chosen.pick(DEFAULT_PORTS["gateway-metrics"])
        envs = {svc: self.service_env(svc, nats_url, admin_dsn, dbs.get(svc), ports[svc]) for svc in SERVICES}
        self.migrate(envs)
        state = StackState(
            os.getpid(), str(self.dir), nats_url, _redact(admin_dsn), f"http://127.0.0.1:{ports['gateway']}",
            admin_credentials=str(self.admin_file),
        )  # fmt: skip
        if self.nats_server is not None:
            state.nats_monitor_url = f"http://127.0.0.1:{self.nats_server.monitor_port}"
        state.gateway_metrics_url = f"http://127.0.0.1:{self.gateway_metrics_port}/metrics"
        for svc in SERVICES:
            child = self.spawn(svc, envs[svc])
            state.processes.append(
                Process(svc, child.pid, f"http://127.0.0.1:{ports[svc]}", str(self.logs / f"{svc}.log"))
            )
        for name, server in (("nats", self.nats_server), ("postgres", self.pg_server)):
            if server is not None and server.pid is not None:
                log = server.data_dir / ("nats.log" if name == "nats" else "postgres.log")
                url = nats_url if name == "nats" else _redact(admin_dsn)
                state.processes.append(Process(name, server.pid, url, str(log), ready=True))
        self.state = state
        state.write(self.state_file)
        return state

    def wait_ready(self, timeout: float = 60.0) -> None:
        assert self.state is not None
        deadline = time.monotonic() + timeout
        for proc in self.state.processes:
            while not proc.ready:
                child = self.children.get(proc.name)
                if child is not None and child.poll() is not None:
                    raise RuntimeError(f"{proc.name} exited with {child.returncode}; see {proc.log}")
                proc.ready = probe_ready(proc.url)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{proc.name} not ready after {timeout:g}s; see {proc.log}")
                if not proc.ready:
                    time.sleep(0.1)
        self.state.write(self.state_file)

    def restart(self, svc: str) -> subprocess.Popen[bytes]:
        """Start a service again after it died (as a process manager would)."""
        assert self.state is not None
        child = self.spawn(svc, self.envs[svc])
        self.restarts[svc] = self.restarts.get(svc, 0) + 1
        for proc in self.state.processes:
            if proc.name == svc:
                proc.pid, proc.ready = child.pid, False
        self.state.write(self.state_file)
        return child

    def stop_the_failing(self, timeout: float = 15.0) -> list[str]:
        """Stop each service whose ``/healthz`` fails (a background loop of it ended), as Kubernetes'
        liveness probe would, so that the supervisor starts it again; the names of those stopped."""
        assert self.state is not None
        failing = [proc.name for proc in self.state.processes
                   if proc.name in self.children and self.children[proc.name].poll() is None
                   and says_it_is_failing(proc.url)]  # fmt: skip
        for name in failing:
            _stop(self.children[name], timeout)
        return failing

    # -- agents -----------------------------------------------------------------------------
    def start_agents(self) -> None:
        """Two local agents as nodes of the dev provider, joined on the first start of this dir."""
        assert self.state is not None
        gateway = self.state.gateway_url
        provider = self.provider()
        asyncio.run(_ensure_provider(gateway, provider))
        for name in DEV_AGENTS:
            state_dir = self.dir / "agents" / name
            if not (state_dir / "node.json").exists():
                subprocess.run(
                    [sys.executable, "-m", "fog_agent", "join", "--gateway", gateway, "--name", f"dev-{name}",
                     "--label", "dev=true", "--email", provider["email"], "--password-stdin",
                     "--state-dir", str(state_dir)],
                    input=provider["password"].encode(), check=True, stdout=subprocess.DEVNULL, stderr=self._log(name),
                )  # fmt: skip
            log = self._log(name)
            child = subprocess.Popen(
                [sys.executable, "-m", "fog_agent", "run", "--state-dir", str(state_dir)],
                stdout=log, stderr=log, start_new_session=True, env={**os.environ, **DEV_AGENT_ENVIRONMENT},
            )  # fmt: skip
            self.agents[name] = child
            self.state.processes.append(Process(name, child.pid, "", str(self.logs / f"{name}.log"), ready=True))
        self.state.write(self.state_file)

    def down(self, timeout: float = 15.0) -> None:
        for child in self.agents.values():  # first, so that their goodbyes still reach the gateway
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.agents.values():
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.agents.clear()
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self.children.values():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()
        for server in (self.nats_server, self.pg_server):
            if server is not None:
                server.stop()
        self.state_file.unlink(missing_ok=True)


async def _ensure_provider(gateway_url: str, provider: dict[str, str]) -> None:
    """Create the dev provider account unless it exists."""
    async with FogClient(gateway_url) as fog:
        try:
            await fog.register(provider["email"], provider["password"], roles=("user", "provider"))
        except ApiError as exc:
            if exc.status != 409:  # 409: it exists from an earlier start
                raise


def probe_ready(url: str) -> bool:
    if not url.startswith("http"):
        return True
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:  # noqa: S310 - our own loopback URL
            return bool(response.status == 200)
    except OSError:
        return False


def says_it_is_failing(url: str) -> bool:
    """Whether the service at ``url`` answers ``/healthz`` with 503; one that does not answer at all is
    left to the supervisor's watch of its process (it may be starting)."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2):  # noqa: S310 - our own loopback URL
            return False
    except urllib.error.HTTPError as answer:
        return answer.code == 503
    except OSError:
        return False


def _stop(child: subprocess.Popen[bytes], timeout: float) -> None:
    child.send_signal(signal.SIGTERM)
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _with_database(dsn: str, database: str) -> str:
    base, _, query = dsn.partition("?")
    head, _, _ = base.rpartition("/")
    return f"{head}/{database}" + (f"?{query}" if query else "")


def _with_user(dsn: str, user: str, password: str) -> str:
    scheme, _, rest = dsn.partition("://")
    _, _, hostpart = rest.rpartition("@")
    return f"{scheme}://{user}:{password}@{hostpart}"


def _redact(dsn: str) -> str:
    scheme, _, rest = dsn.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}" if at else dsn
