"""Keeping jobs from filling the node's disk.

A job writes beneath its working directory (Landlock keeps it there; its ``/tmp`` is there too), and nothing else
bounds how much: one job could fill the file system the agent, and its owner, live on. While jobs run, the agent
looks at that file system's free space every ``CHECK_EVERY_S``; when it is below the reserve
(``FOG_AGENT_DISK_RESERVE``: 5 % of the file system unless set), the running job whose directory holds the most is
stopped, ``failed``, saying why, and its directory removed. One at a time: the next is chosen once the first one's
directory is gone (or ``RECOVERY_S`` passed). A job that holds less than ``MIN_BLAME`` is never the one: the disk
is then low for another reason, which the agent logs. Either is told to the node's owner too, over BitChat
(``tell_owner``: ``fog_agent.owner_messages``).

A look at the free space is one ``statvfs`` (microseconds); the directories are measured only when it is low.
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


def choose(held: Mapping[K, int], free: int, reserve: int, min_blame: int = MIN_BLAME) -> K | None:
    """The job to stop: none while ``free`` is at least ``reserve``; else the one holding the most, if that is at least
    ``min_blame``."""
    if free >= reserve or not held:
        return None
    most = max(held, key=lambda key: held[key])
    return most if held[most] >= min_blame else None


class DiskGuard:
    """Watches the free space of ``path``'s file system while jobs run (``watching``), and stops the one that holds
    the most when it falls below ``reserve``."""

    def __init__(
        self,
        path: Path,
        reserve: int,
        *,
        every_s: float = CHECK_EVERY_S,
        free: Callable[[Path], int] = free_bytes,
        min_blame: int = MIN_BLAME,
    ) -> None:
        self.path, self.reserve, self.every_s, self.min_blame = path, reserve, every_s, min_blame
        #: the free space of a path's file system (``free_bytes``)
        self.free_of = free
        #: tells the node's owner what the guard did, or could not do (``OwnerMessages.tell``), if set
        self.tell_owner: Callable[[str], None] | None = None
        self._watched: dict[Stoppable, Path] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopped: Path | None = None  # the directory of the last job stopped, until it is gone
        self._blamed_none = False
        self._measure_after = 0.0  # when the disk is low and no job was to blame: not before then again

    @contextmanager
    def watching(self, job: Stoppable, directory: Path) -> Iterator[None]:
        """While the block runs, ``job`` (writing beneath ``directory``) may be stopped for the disk."""
        self._watched[job] = directory
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="disk-guard")
        try:
            yield
        finally:
            del self._watched[job]

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while self._watched:  # the last job's end ends the watch; the next job's start begins another
            await asyncio.sleep(self.every_s)
            if self.free_of(self.path) >= self.reserve:
                self._blamed_none, self._measure_after = False, 0.0
            elif not self._recovering() and loop.time() >= self._measure_after:
                await self._stop_the_biggest()

    def _recovering(self) -> bool:
        return self._stopped is not None and self._stopped.exists()

    async def _stop_the_biggest(self) -> None:
        watched = dict(self._watched)
        held = await asyncio.to_thread(lambda: {job: directory_bytes(path) for job, path in watched.items()})
        free = self.free_of(self.path)
        victim = choose(held, free, self.reserve, self.min_blame)
        if victim is None:
            # Measuring every job's directory each second would not help: look again in a while.
            self._measure_after = asyncio.get_running_loop().time() + NOT_TO_BLAME_PAUSE_S
            if free < self.reserve and not self._blamed_none:
                self._blamed_none = True  # said once, until there is enough free again
                log.warning("%s has %d MiB free, under its reserve of %d MiB, and no job holds %d MiB of it",
                            self.path, free // MIB, self.reserve // MIB, self.min_blame // MIB)  # fmt: skip
                self._tell(
                    f"This node's disk is low: {free // MIB} MiB free where its jobs write ({self.path}), under the"
                    f" reserve of {self.reserve // MIB} MiB, and no job of it holds {self.min_blame // MIB} MiB: "
                    "something else on the machine is filling it. Jobs stopped for the disk would change nothing."
                )
            return
        why = (
            f"the node's disk ran low ({free // MIB} MiB free, under its reserve of {self.reserve // MIB} MiB) and"
            f" this job's directory held {held[victim] // MIB} MiB, the most of any job's"
        )
        log.warning("stopping a job: %s", why)
        victim.interrupt(why)
        self._tell(
            f"This node's disk ran low: {free // MIB} MiB free where its jobs write ({self.path}), under the reserve"
            f" of {self.reserve // MIB} MiB. I stopped job {victim.job_id}, whose directory held"
            f" {held[victim] // MIB} MiB, the most of any job's; its directory is removed."
        )
        self._stopped = watched[victim]
        asyncio.get_running_loop().call_later(RECOVERY_S, self._recovered, self._stopped)

    def _tell(self, text: str) -> None:
        if self.tell_owner is not None:
            self.tell_owner(text)

    def _recovered(self, directory: Path) -> None:
        if self._stopped == directory:
            self._stopped = None
