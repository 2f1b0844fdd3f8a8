"""The agent's side of the job launcher (``fog_agent.launcher_process``): start it, hand it jobs, hear them end.

One ``Launcher`` serves every job of an agent. It starts the launcher process on the first job, and again
on the next job after it died (its jobs died with it: they are reported killed by ``SIGKILL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fog_agent import launcher_process

log = logging.getLogger(__name__)

#: how a job ends when its launcher died under it: the parent-death signal killed it
KILLED_WITH_LAUNCHER = -9
_PROGRAM = Path(launcher_process.__file__)


class LauncherError(Exception):
    """The launcher is not there to start a job."""


@dataclass(frozen=True)
class JobProgram:
    """What the launcher runs, and how: everything the child does between fork and exec."""

    argv: Sequence[str]
    env: Mapping[str, str]
    cwd: Path
    rlimits: Sequence[tuple[int, tuple[int, int]]]
    uid: int | None = None
    gid: int | None = None
    umask: int = 0o077
    #: ``{"abi", "read", "write"}`` to confine the job with Landlock (``launcher_process.confine``), or None
    landlock: Mapping[str, Any] | None = None
    #: ``{"shm_bytes"}`` for a view of the machine of the job's own (``launcher_process.private_view``), or None
    view: Mapping[str, Any] | None = None
    #: True for a network of the job's own, with loopback alone (``launcher_process.isolate_network``)
    isolated_network: bool = False

    def request(self, request_id: int, *, prepare: bool = False) -> bytes:
        return json.dumps({
            "id": request_id, "argv": list(self.argv), "env": dict(self.env), "cwd": str(self.cwd),
            "umask": self.umask, "uid": self.uid, "gid": self.gid, "landlock": self.landlock, "view": self.view,
            "isolated_network": self.isolated_network,
            "rlimits": [[which, soft, hard] for which, (soft, hard) in self.rlimits],
            launcher_process.PREPARE: prepare,
        }).encode()  # fmt: skip


class NotPrepared(Exception):
    """The launcher holds no such prepared job (it was started anew, or could not prepare it): start it as usual."""


@dataclass(frozen=True)
class PreparedJob:
    """A job the launcher holds ready, in a spare that has taken every step but its limits and its exec."""

    request_id: int
    channel: socket.socket  # the launcher it was prepared by: a new launcher knows nothing of it


@dataclass(frozen=True)
class Usage:
    """What a job's first process used, with the descendants it waited for (``wait4``)."""

    cpu_s: float
    #: the largest resident set of any one of those processes
    max_rss_bytes: int


@dataclass(frozen=True)
class Exit:
    code: int  # as ``Popen.returncode``
    usage: Usage | None = None  # none when the launcher died with the job


class LaunchedJob:
    """A job's first process, as the launcher started it: its ``pid`` (and process group), its ``cgroup`` (when
    jobs get one: every process of the job, whatever its session), and its end."""

    def __init__(self, pid: int, ended: asyncio.Future[Exit], cgroup: Path | None = None) -> None:
        self.pid = pid
        self.cgroup = cgroup
        self._ended = ended

    @property
    def returncode(self) -> int | None:
        return self._ended.result().code if self._ended.done() else None

    @property
    def usage(self) -> Usage | None:
        """Once it has ended."""
        return self._ended.result().usage if self._ended.done() else None

    async def wait(self) -> int:
        return (await asyncio.shield(self._ended)).code


class Launcher:
    def __init__(self, cgroup_root: Path | None = None) -> None:
        """``cgroup_root``: the agent's cgroup directory (``fog_agent.cgroups``), where each job gets a cgroup."""
        self._cgroup_root = cgroup_root
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = itertools.count(1)
        self._starting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._running: dict[int, asyncio.Future[Exit]] = {}
        #: told when the launcher killed its jobs for want of word from the agent, with how long that was (s)
        self.on_fenced: Callable[[float], None] = lambda silent_s: None
        self._lease_s: float | None = None

    def keep_alive(self, lease_s: float) -> None:
        """Have the launcher kill its jobs should it hear nothing from the agent for ``lease_s`` seconds (the
        lease, ``launcher_process``): sent again while the agent runs, and to each launcher as it starts."""
        self._lease_s = lease_s
        if self._channel is not None:
            _send_lease(self._channel, lease_s)

    async def start(self, program: JobProgram, output: int) -> LaunchedJob:
        """Start ``program`` with ``output`` as its stdout and stderr; raises ``OSError`` when it cannot start."""
        request_id = next(self._ids)
        body, fds = _message(program, request_id, output)
        try:
            answer = await self._ask(request_id, body, fds)
        finally:
            for fd in fds[1:]:
                os.close(fd)
        return self._launched(answer)

    async def prepare(self, program: JobProgram, output: int) -> PreparedJob:
        """Have ``program`` made ready to start (``go``), or given up (``withdraw``); nothing runs until then."""
        request_id = next(self._ids)
        body, fds = _message(program, request_id, output, prepare=True)
        channel = self._ensure_running()
        try:
            await _send(channel, body, fds)
        finally:
            for fd in fds[1:]:
                os.close(fd)
        return PreparedJob(request_id, channel)

    async def go(self, prepared: PreparedJob) -> LaunchedJob:
        """Start a prepared job; raises ``NotPrepared`` when the launcher does not hold it, ``OSError`` as ``start``."""
        if prepared.channel is not self._channel:
            raise NotPrepared
        answer = await self._ask(prepared.request_id, json.dumps({launcher_process.GO: prepared.request_id}).encode())
        if answer.get(launcher_process.UNPREPARED):
            raise NotPrepared
        return self._launched(answer)

    async def withdraw(self, prepared: PreparedJob) -> None:
        """Let a prepared job's spare go, having run nothing."""
        if prepared.channel is self._channel:
            with contextlib.suppress(LauncherError):  # gone: so is the spare
                await _send(prepared.channel, json.dumps({launcher_process.WITHDRAW: prepared.request_id}).encode(), [])

    async def _ask(self, request_id: int, body: bytes, fds: Sequence[int] = ()) -> dict[str, Any]:
        channel = self._ensure_running()
        reply = asyncio.get_running_loop().create_future()
        self._starting[request_id] = reply
        try:
            await _send(channel, body, fds)  # one request a message (SOCK_SEQPACKET): never interleaved
            answer: dict[str, Any] = await reply
            return answer
        finally:
            self._starting.pop(request_id, None)

    def _launched(self, answer: dict[str, Any]) -> LaunchedJob:
        if "errno" in answer:
            number = int(answer["errno"])
            raise OSError(number, os.strerror(number))
        pid = int(answer["pid"])
        ended = self._running.get(pid)
        if ended is None:
            ended = self._running[pid] = asyncio.get_running_loop().create_future()
        elif ended.done():  # its exit was read in the same batch as this answer
            del self._running[pid]
        cgroup = answer.get("cgroup")
        return LaunchedJob(pid, ended, None if cgroup is None else Path(cgroup))

    def close(self) -> None:
        """Stop the launcher; it kills the jobs it still has."""
        self._disconnect("the agent closed its launcher")

    # -- the launcher process ------------------------------------------------------------------------------

    def _ensure_running(self) -> socket.socket:
        loop = asyncio.get_running_loop()
        if self._channel is not None and self._loop is loop:
            return self._channel
        self._disconnect("the launcher was started anew")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            root = [] if self._cgroup_root is None else [str(self._cgroup_root)]
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(_PROGRAM), str(theirs.fileno()), *root],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the terminal's Ctrl-C is the agent's, not its jobs'
                close_fds=True,
                env={},  # nothing of the agent's (its FOG_* settings): it needs none, and gives jobs their own
            )
        except OSError as exc:
            ours.close()
            raise LauncherError(f"cannot start the job launcher: {exc.strerror or exc}") from exc
        finally:
            theirs.close()
        ours.setblocking(False)
        if self._lease_s is not None:  # before any job: a launcher holds none of its agent's jobs unleased
            _send_lease(ours, self._lease_s)
        self._channel, self._loop = ours, loop
        loop.add_reader(ours.fileno(), self._on_readable)
        log.debug("job launcher started (pid %d)", self._process.pid)
        return ours

    def _on_readable(self) -> None:
        channel = self._channel
        while channel is not None:
            try:
                data = channel.recv(4096)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self._disconnect("the job launcher is gone")
                return
            self._on_message(json.loads(data))

    def _on_message(self, message: dict[str, Any]) -> None:
        if launcher_process.FENCED in message:  # before the ``exited`` of the jobs it killed
            self.on_fenced(float(message[launcher_process.FENCED]))
            return
        if "exited" in message:
            pid, code = int(message["exited"]), int(message["code"])
            usage = Usage(float(message["cpu_s"]), int(message["max_rss_bytes"])) if "cpu_s" in message else None
            ended = self._running.pop(pid, None)
            if ended is None:  # ended before its start was taken in: keep it for ``start``
                assert self._loop is not None
                ended = self._running[pid] = self._loop.create_future()
            if not ended.done():
                ended.set_result(Exit(code, usage))
            return
        reply = self._starting.get(int(message["id"]))
        if reply is not None and not reply.done():
            reply.set_result(message)

    def _disconnect(self, why: str) -> None:
        channel, process = self._channel, self._process
        self._channel = self._process = None
        if channel is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(channel.fileno())
            channel.close()  # the launcher reads the end of its socket and kills what it still runs
        if process is not None:
            _reap_later(process)
        for reply in self._starting.values():
            if not reply.done():
                reply.set_exception(LauncherError(why))
        for ended in self._running.values():
            if not ended.done():
                ended.set_result(Exit(KILLED_WITH_LAUNCHER))
        if self._running:
            log.warning("%s: %d running job(s) died with it", why, len(self._running))
        self._starting.clear()
        self._running.clear()


def _message(program: JobProgram, request_id: int, output: int, *, prepare: bool = False) -> tuple[bytes, list[int]]:
    """A request as one message: the body and the job's output, or a long one in a file (both then to close)."""
    body = program.request(request_id, prepare=prepare)
    if len(body) <= launcher_process.MAX_INLINE_REQUEST_BYTES:
        return body, [output]
    # A long command line (the API allows 1 MiB of it) does not fit in one message: it goes in a file.
    inline = {"id": request_id, launcher_process.REQUEST_IN_FILE: True, launcher_process.PREPARE: prepare}
    return json.dumps(inline).encode(), [output, _in_memory_file(body)]


def _send_lease(channel: socket.socket, lease_s: float) -> None:
    with contextlib.suppress(OSError):  # a full or closed socket: whatever the agent sends next renews it too
        channel.send(json.dumps({launcher_process.LEASE: lease_s}).encode())


def _in_memory_file(data: bytes) -> int:
    fd = os.memfd_create("fog-job-request", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "wb") as file:
            file.write(data)
    except BaseException:
        os.close(fd)
        raise
    return fd


async def _send(channel: socket.socket, body: bytes, fds: Sequence[int]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        try:
            socket.send_fds(channel, [body], fds)
            return
        except BlockingIOError:
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(channel.fileno(), _settle, writable)
            try:
                await writable
            finally:
                loop.remove_writer(channel.fileno())
        except OSError as exc:
            raise LauncherError(f"the job launcher is gone ({exc.strerror or exc})") from exc


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _reap_later(process: subprocess.Popen[bytes]) -> None:
    # The launcher exits once it has read the end of its socket; a zombie must not stay behind.
    if process.poll() is None:
        with contextlib.suppress(RuntimeError):  # no running loop: the interpreter is exiting
            asyncio.get_running_loop().run_in_executor(None, process.wait)
