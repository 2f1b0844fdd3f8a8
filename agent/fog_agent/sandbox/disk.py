"""Keeping jobs from filling the node's disk.

A job writes beneath its working directory (Landlock keeps it there; its ``/tmp`` is there too). Two bounds:

- **What it stated** (``resources.disk_bytes``, when not 0): the scheduler placed it where the node's disk for jobs
  had that much left, so it may hold no more. Its directory is measured every ``LIMIT_EVERY_S`` (in a thread; less
  often when measuring takes long: ``LIMIT_SHARE``), and once it holds more, it is stopped, ``failed``, saying so.
- **The node's reserve** (``FOG_AGENT_DISK_RESERVE``: 5 % of the file system unless set): every ``CHECK_EVERY_S`` the
  agent looks at the file system's free space; when it is below the reserve, the running job that holds the most
  beyond what it stated (all of it, for a job that stated nothing) is stopped, ``failed``, saying why, and its
  directory removed. One at a time: the next is chosen once the first one's directory is gone (or ``RECOVERY_S``
  passed). A job that holds less than ``MIN_BLAME`` is never the one: the disk is then low for another reason,
  which the agent logs. Either is told to the node's owner too, over BitChat (``tell_owner``:
  ``fog_agent.owner_messages``).

A look at the free space is one ``statvfs`` (microseconds); the directories of jobs that stated no disk are measured
only when it is low.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)

MIB = 1024 * 1024
CHECK_EVERY_S = 1.0
#: how often the directories of jobs that stated their disk are measured, at most
LIMIT_EVERY_S = 2.0
#: measuring may take at most this share of the time between measures (a job of a million files takes seconds)
LIMIT_SHARE = 0.1
#: after a job was stopped, how long the guard waits at most for its directory to go before it chooses again
RECOVERY_S = 10.0
#: a job holding less than this is not what filled the disk
MIN_BLAME = 64 * MIB
#: when the disk is low and no job holds enough to blame, how long before the directories are measured again
NOT_TO_BLAME_PAUSE_S = 30.0
DEFAULT_RESERVE = "5%"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": MIB, "g": 1024 * MIB, "t": 1024 * 1024 * MIB}
K = TypeVar("K")


class Stoppable(Protocol):
    @property
    def job_id(self) -> str: ...

    def interrupt(self, why: str) -> None: ...


def reserve_from_env(work_root: Path, environ: Mapping[str, str] = os.environ) -> int | None:
    """The free space, in bytes, below which the guard stops jobs: ``FOG_AGENT_DISK_RESERVE`` as a share of the file
    system of ``work_root`` (``5%``) or a size (``2G``, ``512M``); None when it is ``off`` (or 0)."""
    text = environ.get("FOG_AGENT_DISK_RESERVE", DEFAULT_RESERVE).strip().lower()
    if text in ("off", "no", "false", "0", "0%"):
        return None
    if text.endswith("%"):
        share = float(text[:-1])
        if not 0 < share < 100:
            raise ValueError(f"FOG_AGENT_DISK_RESERVE={text!r}: a share is between 0 and 100 %")
        there = next(path for path in (work_root, *work_root.parents) if path.exists())  # made at the agent's start
        disk = os.statvfs(there)
        return int(disk.f_blocks * disk.f_frsize * share / 100)
    size = _SIZE.match(text)
    if size is None:
        raise ValueError(f"FOG_AGENT_DISK_RESERVE={text!r} is neither a share (5%), a size (2G) nor off")
    return int(float(size.group(1)) * _UNITS[size.group(2).lower()])


def free_bytes(path: Path) -> int:
    """What a user who is not root may still write on ``path``'s file system."""
    disk = os.statvfs(path)
    return disk.f_bavail * disk.f_frsize


def directory_bytes(path: Path) -> int:
    """The disk that ``path`` and everything beneath it take (blocks, not apparent sizes: a sparse file is what it
    holds); what vanishes or cannot be read meanwhile counts for nothing."""
    total, pending = 0, [str(path)]
    while pending:
        with suppress(OSError), os.scandir(pending.pop()) as entries:
            for entry in entries:
                with suppress(OSError):
                    total += entry.stat(follow_symlinks=False).st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
    return total


def choose(
    held: Mapping[K, int], free: int, reserve: int, min_blame: int = MIN_BLAME, stated: Mapping[K, int] | None = None
) -> K | None:
    """The job to stop: none while ``free`` is at least ``reserve``; else the one holding the most beyond what it
    ``stated`` (the node promised it the rest), if that is at least ``min_blame``; else the one holding the most, if
    that is."""
    if free >= reserve or not held:
        return None
    stated = stated or {}
    beyond = {key: size - stated.get(key, 0) for key, size in held.items()}
    most = max(beyond, key=lambda key: beyond[key])
    if beyond[most] >= min_blame:
        return most
    most = max(held, key=lambda key: held[key])
    return most if held[most] >= min_blame else None


def over_limits(held: Mapping[K, int], limits: Mapping[K, int]) -> list[K]:
    """The jobs that hold more than they stated (a limit of 0 is none)."""
    return [key for key, size in held.items() if 0 < limits.get(key, 0) < size]


def _mib(size: int) -> str:
    return f"{size / MIB:.4g} MiB"


class DiskGuard:
    """Watches the jobs' directories while they run (``watching``): stops a job that holds more than it stated, and,
    when the free space of ``path``'s file system falls below ``reserve`` (None: no reserve), the one that holds the
    most beyond what it stated."""

    def __init__(
        self,
        path: Path,
        reserve: int | None,
        *,
        every_s: float = CHECK_EVERY_S,
        limit_every_s: float = LIMIT_EVERY_S,
        free: Callable[[Path], int] = free_bytes,
        min_blame: int = MIN_BLAME,
    ) -> None:
        self.path, self.reserve, self.every_s, self.min_blame = path, reserve, every_s, min_blame
        self.limit_every_s = limit_every_s
        #: the free space of a path's file system (``free_bytes``)
        self.free_of = free
        #: tells the node's owner what the guard did, or could not do (``OwnerMessages.tell``), if set
        self.tell_owner: Callable[[str], None] | None = None
        self._watched: dict[Stoppable, Path] = {}
        self._limits: dict[Stoppable, int] = {}  # what each job that stated its disk may hold
        self._task: asyncio.Task[None] | None = None
        self._stopped: Path | None = None  # the directory of the last job stopped, until it is gone
        self._blamed_none = False
        self._measure_after = 0.0  # when the disk is low and no job was to blame: not before then again
        self._limits_due = 0.0  # when the directories of jobs with a limit are measured next

    @contextmanager
    def watching(self, job: Stoppable, directory: Path, limit: int = 0) -> Iterator[None]:
        """While the block runs, ``job`` (writing beneath ``directory``) may be stopped for the disk: for holding
        more than ``limit`` (0: none), or the most when the disk is low."""
        self._watched[job] = directory
        if limit:
            self._limits[job] = limit
        if (self.reserve is not None or limit) and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="disk-guard")
        try:
            yield
        finally:
            del self._watched[job]
            self._limits.pop(job, None)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._watched:  # the last job's end ends the watch; the next job's start begins another
            await asyncio.sleep(self.every_s)
            if self._limits and loop.time() >= self._limits_due:
                await self._stop_those_over_their_limit()
            if self.reserve is None:
                continue
            if self.free_of(self.path) >= self.reserve:
                self._blamed_none, self._measure_after = False, 0.0
            elif not self._recovering() and loop.time() >= self._measure_after:
                await self._stop_the_biggest(self.reserve)

    async def _stop_those_over_their_limit(self) -> None:
        loop = asyncio.get_running_loop()
        limited = {job: self._watched[job] for job in self._limits if job in self._watched}
        began = loop.time()
        held = await asyncio.to_thread(lambda: {job: directory_bytes(path) for job, path in limited.items()})
        took = loop.time() - began
        self._limits_due = loop.time() + max(self.limit_every_s, took / LIMIT_SHARE)
        for job in over_limits(held, self._limits):
            why = (
                f"its directory held {_mib(held[job])}, more than the {_mib(self._limits[job])} of disk it stated"
                " (resources.disk_bytes)"
            )
            log.info("stopping job %s: %s", job.job_id, why)
            job.interrupt(why)

    def _recovering(self) -> bool:
        return self._stopped is not None and self._stopped.exists()

    async def _stop_the_biggest(self, reserve: int) -> None:
        watched = dict(self._watched)
        held = await asyncio.to_thread(lambda: {job: directory_bytes(path) for job, path in watched.items()})
        free = self.free_of(self.path)
        victim = choose(held, free, reserve, self.min_blame, self._limits)
        if victim is None:
            # Measuring every job's directory each second would not help: look again in a while.
            self._measure_after = asyncio.get_running_loop().time() + NOT_TO_BLAME_PAUSE_S
            if free < reserve and not self._blamed_none:
                self._blamed_none = True  # said once, until there is enough free again
                log.warning("%s has %d MiB free, under its reserve of %d MiB, and no job holds %d MiB of it",
                            self.path, free // MIB, reserve // MIB, self.min_blame // MIB)  # fmt: skip
                self._tell(
                    f"This node's disk is low: {free // MIB} MiB free where its jobs write ({self.path}), under the"
                    f" reserve of {reserve // MIB} MiB, and no job of it holds {self.min_blame // MIB} MiB: "
                    "something else on the machine is filling it. Jobs stopped for the disk would change nothing."
                )
            return
        # Where some jobs stated their disk, the victim was chosen by what it held beyond that (``choose``).
        stated = self._limits.get(victim, 0)
        most = "the most beyond what it stated of any job's" if self._limits else "the most of any job's"
        if self._limits and held[victim] - stated < self.min_blame:
            most = "the most of any job's, though none holds much beyond what it stated"
        why = (
            f"the node's disk ran low ({free // MIB} MiB free, under its reserve of {reserve // MIB} MiB) and"
            f" this job's directory held {held[victim] // MIB} MiB, {most}"
        )
        log.warning("stopping a job: %s", why)
        victim.interrupt(why)
        self._tell(
            f"This node's disk ran low: {free // MIB} MiB free where its jobs write ({self.path}), under the reserve"
            f" of {reserve // MIB} MiB. I stopped job {victim.job_id}, whose directory held"
            f" {held[victim] // MIB} MiB, {most}; its directory is removed."
        )
        self._stopped = watched[victim]
        asyncio.get_running_loop().call_later(RECOVERY_S, self._recovered, self._stopped)

    def _tell(self, text: str) -> None:
        if self.tell_owner is not None:
            self.tell_owner(text)

    def _recovered(self, directory: Path) -> None:
        if self._stopped == directory:
            self._stopped = None
