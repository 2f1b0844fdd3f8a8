"""A cgroup (v2) for each job: whatever a job starts, in whatever session, ends with it.

A job's processes are found by their session and their parentage (``fog_agent.sandbox``). A process that
leaves the session (``setsid``) and outlives its parent escapes both: before this, a job could leave a
daemon running on the node for good. A cgroup holds every process forked inside it, whatever it does to its
session or its parent, and ``cgroup.kill`` (Linux 5.14) kills them all at once.

Each agent makes a directory of its own below the cgroup it runs in: ``fog-agent.<pid>.<n>`` (several agents
may share a cgroup: one machine offering several nodes, a test's stack). Below it, each spare of the job
launcher (``launcher_process``) makes a cgroup and moves into it while it waits, before it becomes a job, so
everything the job forks is born inside. When the job ends, ``kill`` ends what is left; ``remove`` takes the
cgroup away once it is empty.

It takes a cgroup v2 hierarchy the agent may write to: root, or a subtree delegated to the agent's user
(systemd's ``Delegate=yes``). Without one, jobs run as before and the agent says so at start
(``JobCgroups.found``). A job cannot leave its cgroup: moving a process takes write access to the cgroup
files, which a job of a root agent (another user) does not have, and a confined job (Landlock) cannot
write below ``/sys``. An agent that was killed leaves its directory behind; the next agent to start below
the same cgroup kills what is left in it and removes it (``_sweep_stale``).

What this does not do yet: per-job memory or CPU limits. Those need the ``memory`` and ``cpu`` controllers
enabled for the agent's subtree, and the agent moved into a leaf of its own (cgroup v2 lets only leaves hold
processes once controllers are enabled below them).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

PREFIX = "fog-agent."
#: how long ``remove`` waits for a killed cgroup's processes to be gone before it gives up (they are dying)
EMPTY_WITHIN_S = 2.0
_POLL_S = 0.005
_numbers = itertools.count(1)


class JobCgroups:
    """The agent's directory in the cgroup hierarchy, and the cgroup of each of its jobs below it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def found(cls, environ: Mapping[str, str] = os.environ, *, proc: Path = Path("/proc")) -> JobCgroups | None:
        """The agent's own directory, made below the cgroup it runs in; ``None`` when ``FOG_AGENT_CGROUPS`` is off,
        or there is no cgroup v2 hierarchy it may write to (logged: jobs then run without)."""
        if environ.get("FOG_AGENT_CGROUPS", "on").strip().lower() in ("0", "false", "no", "off"):
            return None
        own = own_cgroup(proc)
        if own is None:
            log.warning("no cgroup v2 hierarchy: a job's processes that leave its session can outlive it")
            return None
        _sweep_stale(own)
        root = own / f"{PREFIX}{os.getpid()}.{next(_numbers)}"
        try:
            root.mkdir()
        except OSError as exc:
            log.warning(
                "cannot make a cgroup below %s (%s): a job's processes that leave its session can outlive it; "
                "run the agent as root, or delegate its cgroup to its user",
                own,
                exc.strerror or exc,
            )
            return None
        if not (root / "cgroup.kill").exists():  # before Linux 5.14
            root.rmdir()
            log.warning("this kernel's cgroups cannot kill a group (Linux 5.14 on): jobs run without one")
            return None
        try:
            _try_a_move(root / "probe")
        except OSError as exc:
            _remove_tree(root)
            log.warning(
                "cannot move a process into a cgroup below %s (%s): a job's processes that leave its session can "
                "outlive it; delegate the agent's cgroup to its user (its cgroup.procs too)",
                own,
                exc.strerror or exc,
            )
            return None
        return cls(root)

    def close(self) -> None:
        """Kill whatever is left below the agent's directory and remove it (every job has ended; blocks)."""
        _remove_tree(self.root)


def remove(path: Path) -> None:
    """Kill what is left in the cgroup ``path`` and take it away; blocks until it is empty (meant for a thread),
    ``EMPTY_WITHIN_S`` at most (then it stays, logged)."""
    kill(path)
    deadline = time.monotonic() + EMPTY_WITHIN_S
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                log.warning("cannot remove the cgroup %s: %s", path, exc.strerror or exc)
                return
        time.sleep(_POLL_S)  # its processes are dying: the kernel empties it in a moment


def _try_a_move(cgroup: Path) -> None:
    """Move a throwaway process into a new cgroup ``cgroup``, then remove both; raises what made it fail.

    Making a directory may be allowed where moving a process is not (moving takes write access to the
    ``cgroup.procs`` of the cgroup the process leaves too): without this trial, every job would then fail to start.
    """
    cgroup.mkdir()
    try:
        with subprocess.Popen(["sh", "-c", "read _"], stdin=subprocess.PIPE) as probe:
            try:
                (cgroup / "cgroup.procs").write_text(str(probe.pid))
            finally:
                assert probe.stdin is not None
                probe.stdin.close()  # it reads the end of its input, and exits
    finally:
        remove(cgroup)


def kill(path: Path) -> None:
    """SIGKILL to every process in the cgroup ``path`` and below, whatever its session; none there is fine."""
    with contextlib.suppress(FileNotFoundError):
        (path / "cgroup.kill").write_bytes(b"1")


def processes(path: Path) -> list[int]:
    """The pids in the cgroup ``path`` (not below it)."""
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except FileNotFoundError:
        return []


def own_cgroup(proc: Path = Path("/proc")) -> Path | None:
    """The directory of this process's own cgroup in the v2 hierarchy, or ``None`` when none is mounted."""
    mount = _v2_mount(proc / "self" / "mountinfo")
    if mount is None:
        return None
    for line in (proc / "self" / "cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    return None


def _v2_mount(mountinfo: Path) -> Path | None:
    # mountinfo: "id parent major:minor root mount-point options [optional...] - fstype source super-options"
    for line in mountinfo.read_text().splitlines():
        fields, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2" and fields.split(" ")[3] == "/":
            return Path(fields.split(" ")[4].replace("\\040", " "))
    return None


def _sweep_stale(own: Path) -> None:
    """Kill and remove what agents that are gone (killed, so they could not) left below ``own``."""
    with contextlib.suppress(OSError):
        for directory in own.iterdir():
            if directory.name.startswith(PREFIX) and directory.is_dir() and not _alive(directory.name):
                log.warning("removing %s, left by an agent that is gone, and what still runs in it", directory)
                _remove_tree(directory)


def _alive(name: str) -> bool:
    try:
        pid = int(name[len(PREFIX) :].split(".", 1)[0])
    except ValueError:
        return True  # not one of ours: leave it
    return bool(psutil.pid_exists(pid))


def _remove_tree(root: Path) -> None:
    kill(root)  # and every cgroup below it
    with contextlib.suppress(FileNotFoundError):
        for child in root.iterdir():
            if child.is_dir():
                remove(child)
    remove(root)
