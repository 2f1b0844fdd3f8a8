"""As whom jobs run when the agent is root: a user of its own for each job, or one named user for all.

A user of its own (the default): each attempt takes a uid (and the gid of the same number) from a range that
no account or group of the machine uses, ``FOG_AGENT_JOB_UIDS`` (``1900000000-1900065535`` unless told), and
gives it back once its processes are gone and its files removed. So two jobs on a node, of different owners,
cannot signal, trace or read the memory of each other's processes, nor read each other's files, even where
the kernel has no Landlock; ``RLIMIT_NPROC``, which counts the processes of a *user*, caps each job on its own;
and whatever a job left running under its uid, even a daemon that escaped its session and has no cgroup to die
with, is found by that uid and killed before the uid is used again. The uids have no account: ``id`` shows no
name, and a program that looks its user up (``getpwuid``) finds none; ``HOME`` is the job's directory.

One named user (``FOG_AGENT_JOB_USER``, ``nobody`` say): every job runs as it. Jobs then share it, with all it
lets them do to each other; kept for machines where jobs must run as an account that exists (its files on a
network share, say).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import logging
import os
import pwd
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fog_agent.sandbox.leftovers import SHARED_MEMORY, kill_processes_of, remove_files_of, running_uids

log = logging.getLogger(__name__)

#: clear of the ranges systemd and shadow-utils give out (accounts below 60,000, dynamic users at 61,184–65,519,
#: containers' ranges from 524,288 to 1,879,048,191) and below 2^31, beyond which some programs misread a uid
DEFAULT_JOB_UIDS = (1_900_000_000, 1_900_065_535)
#: where the uids that jobs hold are locked, by every agent of the machine
UID_LOCKS = Path("/run/fog-agent/job-uids")
#: a node runs no more jobs at once than its cores allow, counted in thousandths, plus a few prepared: a range
#: smaller than this could run out
MIN_JOB_UIDS = 1024


class SandboxError(Exception):
    """The sandbox cannot be set up as configured (the agent cannot run jobs safely)."""


class NoJobUser(SandboxError):
    """Every uid of the range is held by a job: this one cannot start."""


@dataclass(frozen=True)
class JobUser:
    """Who one job runs as. ``own``: the job's alone, so whatever runs as it once the job ended is the job's."""

    name: str
    uid: int
    gid: int
    own: bool = False


class SharedJobUser:
    """Every job runs as one named user."""

    def __init__(self, user: JobUser) -> None:
        self.user = user

    def take(self) -> JobUser:
        return self.user

    def give_back(self, user: JobUser) -> None:
        pass

    @property
    def sample(self) -> JobUser:
        return self.user

    def describe(self) -> str:
        return f"{self.user.name}, all of them"


class JobUidRange:
    """Each job runs as a uid of ``first``..``last`` that no other job holds; gid the same number.

    Taken in turn from a random place, so that a uid is used again as late as can be: a file a job left where
    the sandbox does not clean (``/tmp``, without Landlock) waits that long for its uid's next job.

    Held with a lock file in ``locks`` (``flock``, released by the kernel when its holder dies, and removed by
    its holder as it gives the uid back): agents on one machine (``fogctl dev up`` runs several) share the
    range and never hand one uid to two jobs, nor kill another agent's job as they sweep their own uid.
    """

    def __init__(self, first: int, last: int, *, locks: Path = UID_LOCKS, start: int | None = None) -> None:
        if not 0 < first <= last:
            raise SandboxError(f"job uids {first}-{last}: not a range of uids other than root's")
        self.first, self.last, self.locks = first, last, locks
        self._size = last - first + 1
        self._next = random.randrange(self._size) if start is None else start  # noqa: S311 -- not a secret
        self._held: dict[int, int] = {}  # uid → its lock file's descriptor
        self._locks_made = False

    def take(self) -> JobUser:
        for _ in range(self._size):
            uid = self.first + self._next % self._size
            self._next = (self._next + 1) % self._size
            if uid not in self._held and self._lock(uid):
                return JobUser(f"uid {uid}", uid, uid, own=True)
        raise NoJobUser(f"all {self._size} job uids ({self.first}-{self.last}) are held by jobs")

    def give_back(self, user: JobUser) -> None:
        fd = self._held.pop(user.uid, None)
        if fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.locks / str(user.uid))  # while still locked: see ``_lock``
            os.close(fd)

    def end_leftovers(self) -> set[int]:
        """Kill what runs as a uid of the range that no job holds, and remove its shared memory: left by a job of
        an agent killed without its jobs' cgroups. The uids so ended."""
        running = {uid for uid in running_uids() if self.first <= uid <= self.last and uid not in self._held}
        ended = {uid for uid in running if self._lock(uid)}  # the others are held by another agent's jobs
        try:
            kill_processes_of(ended)
            remove_files_of(ended, SHARED_MEMORY)
        finally:
            for uid in ended:
                self.give_back(JobUser("", uid, uid, own=True))
        return ended

    def _lock(self, uid: int) -> bool:
        """Hold ``uid``, unless another job (of this agent or another) does."""
        if not self._locks_made:
            self.locks.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._locks_made = True
        path = self.locks / str(uid)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Its holder removes the file before it lets go: a lock on a file no longer there holds nothing.
            if os.fstat(fd).st_ino != os.stat(path, follow_symlinks=False).st_ino:
                raise BlockingIOError
        except OSError:  # held (BlockingIOError), or removed since it was opened (FileNotFoundError)
            os.close(fd)
            return False
        self._held[uid] = fd
        return True

    @property
    def held(self) -> int:
        return len(self._held)

    @property
    def sample(self) -> JobUser:
        """A uid of the range, as the file system sees each of them (none owns anything the agent made)."""
        return JobUser(f"uid {self.first}", self.first, self.first, own=True)

    def describe(self) -> str:
        return f"a uid of their own ({self.first}-{self.last})"


JobUsers = SharedJobUser | JobUidRange


def job_users_from_env(environ: Mapping[str, str] = os.environ, *, euid: int | None = None) -> JobUsers | None:
    """As whom jobs run, or ``None`` when the agent is not root (they then run as the agent's own user)."""
    if (os.geteuid() if euid is None else euid) != 0:
        return None
    name, uids = environ.get("FOG_AGENT_JOB_USER", ""), environ.get("FOG_AGENT_JOB_UIDS", "")
    if name and uids:
        raise SandboxError("set FOG_AGENT_JOB_USER (one user for all jobs) or FOG_AGENT_JOB_UIDS, not both")
    if name:
        return SharedJobUser(named_user(name))
    first, last = parse_uid_range(uids) if uids else DEFAULT_JOB_UIDS
    check_uid_range(first, last)
    return JobUidRange(first, last)


def named_user(name: str) -> JobUser:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise SandboxError(f"the job user {name!r} does not exist; create it or set FOG_AGENT_JOB_USER") from None
    if entry.pw_uid == 0:
        raise SandboxError(f"the job user {name!r} is root: jobs never run as root")
    return JobUser(name, entry.pw_uid, entry.pw_gid)


def parse_uid_range(text: str) -> tuple[int, int]:
    first, sep, last = text.strip().partition("-")
    try:
        if not sep:
            raise ValueError
        return int(first), int(last)
    except ValueError:
        raise SandboxError(f"FOG_AGENT_JOB_UIDS={text!r}: expected FIRST-LAST, e.g. 1900000000-1900065535") from None


def check_uid_range(
    first: int,
    last: int,
    *,
    accounts: Iterable[tuple[str, int]] | None = None,
    groups: Iterable[tuple[str, int]] | None = None,
    uid_map: str | None = None,
    gid_map: str | None = None,
) -> None:
    """Raise unless every uid (and gid) of the range is free for jobs: not root, owned by no account or group of
    the machine (a job would get its files, or its group's), mapped in this user namespace, and enough of them."""
    where = f"FOG_AGENT_JOB_UIDS={first}-{last}"
    if not 0 < first <= last < 2**32 - 1:
        raise SandboxError(f"{where}: not a range of uids other than root's")
    if last - first + 1 < MIN_JOB_UIDS:
        raise SandboxError(f"{where}: {last - first + 1} uids, fewer than the {MIN_JOB_UIDS} a node may need at once")
    accounts = ((e.pw_name, e.pw_uid) for e in pwd.getpwall()) if accounts is None else accounts
    groups = ((e.gr_name, e.gr_gid) for e in grp.getgrall()) if groups is None else groups
    for kind, entries in (("user", accounts), ("group", groups)):
        for name, number in entries:
            if first <= number <= last:
                raise SandboxError(f"{where}: {number} is the {kind} {name}'s; choose a range no {kind} uses")
    for kind, text in (("uid", uid_map), ("gid", gid_map)):
        if text is None:
            try:
                with open(f"/proc/self/{kind}_map") as file:
                    text = file.read()
            except OSError:
                continue  # no user namespaces: every id exists
        if not _mapped(first, last, text):
            raise SandboxError(
                f"{where}: not all mapped in this user namespace (/proc/self/{kind}_map); choose a range within it"
            )


def _mapped(first: int, last: int, id_map: str) -> bool:
    """Whether ``first``..``last`` lies within one line of an ``id_map`` (``inside outside count`` lines)."""
    for line in id_map.splitlines():
        fields = line.split()
        if len(fields) == 3:
            inside, _, count = (int(field) for field in fields)
            if inside <= first and last < inside + count:
                return True
    return False
