"""Ending attempts off the event loop: their working directories, cgroups and users' leftovers removed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fog_agent import cgroups
from fog_agent.sandbox.leftovers import SHARED_MEMORY, kill_processes_of, remove_files_of
from fog_agent.sandbox.policy import PRIVATE_TMP
from fog_agent.sandbox.users import JobUser, JobUsers

log = logging.getLogger(__name__)

#: how long a job's uid waits to be swept with others', once its job (without a cgroup) ended
SWEEP_EVERY_S = 0.1


@dataclass(frozen=True)
class Workdir:
    """An attempt's working directory, and the user it runs as (``None``: the agent's own)."""

    path: Path
    user: JobUser | None = None


class WorkdirRemover:
    """Removes ended attempts' working directories (and cgroups) in a worker thread, those that wait in one go.

    A job's own uid is given back once its directory is gone, its files in ``/dev/shm`` too, and, when the job
    had no cgroup, every process still running as it killed: a daemon that left the job's session and outlived
    its parent ends there, and the uid's next job never meets it. That takes a look through every process of
    the machine (~0.6 ms for 80), so the uids of jobs without a cgroup wait ``SWEEP_EVERY_S`` and are swept
    together: under an array of short jobs, one look for each of their batches instead of one for each job.

    ``remove`` never blocks: the directory is gone a moment later, or, if the agent stops first, once
    ``finished()`` has been awaited (the agent does, and leaves none behind).
    """

    def __init__(self, users: JobUsers | None = None) -> None:
        self._users = users
        self._waiting: list[Path] = []
        self._cgroups: list[Path] = []
        self._contained: list[JobUser] = []  # their processes were in a cgroup, killed with it: none is left
        self._unswept: list[Workdir] = []  # no cgroup: what they left running is found by their uid
        self._removing: asyncio.Task[None] | None = None
        self._sweeping: asyncio.Task[None] | None = None

    def remove(self, workdir: Workdir | None, cgroup: Path | None = None) -> None:
        """Remove ``workdir`` (``None``: keep it, and its user's uid for good) and ``cgroup``."""
        if workdir is not None and workdir.user is not None and workdir.user.own and cgroup is None:
            self._sweep_soon(workdir)  # removed once what still runs as its user is killed: it might write there
            return
        if workdir is not None:
            self._waiting.append(workdir.path)
            if workdir.user is not None and workdir.user.own:
                self._contained.append(workdir.user)
        if cgroup is not None:
            self._cgroups.append(cgroup)
        if self._removing is None or self._removing.done():
            self._removing = asyncio.get_running_loop().create_task(self._remove_waiting(), name="workdir removal")

    async def finished(self) -> None:
        """Until every directory handed to ``remove`` is gone (or could not be removed, and was logged), and every
        uid swept."""
        while True:
            busy = [task for task in (self._removing, self._sweeping) if task is not None and not task.done()]
            if not busy:
                return
            await asyncio.shield(busy[0])  # the agent's own cancellation must not stop a removal half way

    async def _remove_waiting(self) -> None:
        while self._waiting or self._cgroups or self._contained:
            (batch, self._waiting), (emptied, self._cgroups) = (self._waiting, []), (self._cgroups, [])
            contained, self._contained = self._contained, []
            await asyncio.to_thread(_remove_all, batch, emptied, {user.uid for user in contained})
            self._give_back(contained)

    def _sweep_soon(self, workdir: Workdir) -> None:
        self._unswept.append(workdir)
        if self._sweeping is None or self._sweeping.done():
            self._sweeping = asyncio.get_running_loop().create_task(self._sweep_waiting(), name="job uid sweep")

    async def _sweep_waiting(self) -> None:
        while self._unswept:
            await asyncio.sleep(SWEEP_EVERY_S)  # those of the jobs that end meanwhile join this sweep
            workdirs, self._unswept = self._unswept, []
            users = [workdir.user for workdir in workdirs if workdir.user is not None]
            await asyncio.to_thread(sweep, {user.uid for user in users}, [workdir.path for workdir in workdirs])
            self._give_back(users)

    def _give_back(self, users: Iterable[JobUser]) -> None:
        if self._users is not None:
            for user in users:
                self._users.give_back(user)


def _remove_all(workdirs: list[Path], cgroup_dirs: Sequence[Path] = (), shm_uids: Collection[int] = ()) -> None:
    for cgroup in cgroup_dirs:
        cgroups.remove(cgroup)
    _remove_workdirs(workdirs)
    remove_files_of(shm_uids, SHARED_MEMORY)


def sweep(uids: Collection[int], workdirs: list[Path]) -> None:
    """End what ``uids`` left: their processes, then (none can make more) their directories and their files in
    ``/dev/shm``."""
    kill_processes_of(uids)
    _remove_workdirs(workdirs)
    remove_files_of(uids, SHARED_MEMORY)


def _remove_workdirs(workdirs: Iterable[Path]) -> None:
    for workdir in workdirs:
        with contextlib.suppress(OSError):  # there only with a view of its own; empty unless the job wrote there
            os.rmdir(workdir / PRIVATE_TMP)
        try:
            os.rmdir(workdir)  # most jobs leave nothing behind
        except OSError:
            _remove_tree(workdir)


def _remove_tree(path: Path) -> None:
    def report(function: object, failed: str, exc_info: object) -> None:
        # e.g. a directory the job made read-only, when the agent is not root: leave it, say so
        log.warning("cannot remove %s from a job's working directory", failed)

    shutil.rmtree(path, onerror=report)
