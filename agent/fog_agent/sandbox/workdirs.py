"""Ending attempts off the event loop: their working directories, cgroups and users' leftovers removed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from fog_agent import cgroups
from fog_agent.sandbox.users import JobUser, JobUsers

log = logging.getLogger(__name__)

#: where POSIX shared memory and semaphores live: a job may write there beside its working directory
SHARED_MEMORY = Path("/dev/shm")  # noqa: S108
#: rounds of killing what runs as an ended job's uid: what forks as it is killed shows in the next round
SWEEPS = 10


@dataclass(frozen=True)
class Workdir:
    """An attempt's working directory, and the user it runs as (``None``: the agent's own)."""

    path: Path
    user: JobUser | None = None


@dataclass(frozen=True)
class _Ended:
    """A uid of a job's own, to be given back once nothing of the job is left under it."""

    user: JobUser
    contained: bool  # its processes were in a cgroup, killed with it: none can be left


class WorkdirRemover:
    """Removes ended attempts' working directories (and cgroups) in a worker thread, those that wait in one go.

    A job's own uid is given back once its directory is gone, its files in ``/dev/shm`` too, and, when the job
    had no cgroup, every process still running as it killed: a daemon that left the job's session and outlived
    its parent ends there, and the uid's next job never meets it.

    ``remove`` never blocks: the directory is gone a moment later, or, if the agent stops first, once
    ``finished()`` has been awaited (the agent does, and leaves none behind).
    """

    def __init__(self, users: JobUsers | None = None) -> None:
        self._users = users
        self._waiting: list[Path] = []
        self._cgroups: list[Path] = []
        self._ended: list[_Ended] = []
        self._removing: asyncio.Task[None] | None = None

    def remove(self, workdir: Workdir | None, cgroup: Path | None = None) -> None:
        """Remove ``workdir`` (``None``: keep it, and its user's uid for good) and ``cgroup``."""
        if workdir is not None:
            self._waiting.append(workdir.path)
            if workdir.user is not None and workdir.user.own:
                self._ended.append(_Ended(workdir.user, contained=cgroup is not None))
        if cgroup is not None:
            self._cgroups.append(cgroup)
        if self._removing is None or self._removing.done():
            self._removing = asyncio.get_running_loop().create_task(self._remove_waiting(), name="workdir removal")

    async def finished(self) -> None:
        """Until every directory handed to ``remove`` is gone (or could not be removed, and was logged)."""
        while self._removing is not None and not self._removing.done():
            await asyncio.shield(self._removing)  # the agent's own cancellation must not stop a removal half way

    async def _remove_waiting(self) -> None:
        while self._waiting or self._cgroups or self._ended:
            (batch, self._waiting), (emptied, self._cgroups) = (self._waiting, []), (self._cgroups, [])
            ended, self._ended = self._ended, []
            await asyncio.to_thread(_remove_all, batch, emptied, ended)
            for each in ended:
                if self._users is not None:
                    self._users.give_back(each.user)


def _remove_all(workdirs: list[Path], cgroup_dirs: Sequence[Path] = (), ended: Sequence[_Ended] = ()) -> None:
    for cgroup in cgroup_dirs:
        cgroups.remove(cgroup)
    kill_processes_of({each.user.uid for each in ended if not each.contained})
    for workdir in workdirs:
        try:
            os.rmdir(workdir)  # most jobs leave nothing behind
        except OSError:
            _remove_tree(workdir)
    remove_files_of({each.user.uid for each in ended}, SHARED_MEMORY)


def kill_processes_of(uids: Collection[int]) -> None:
    """SIGKILL every process that runs as one of ``uids`` (its real uid), round after round until none is left."""
    for _ in range(SWEEPS if uids else 0):
        found = [
            process
            for process in psutil.process_iter(["uids", "status"])
            if process.info["uids"] is not None
            and process.info["uids"].real in uids
            and process.info["status"] != psutil.STATUS_ZOMBIE  # dead already; its parent's to reap
        ]
        if not found:
            return
        for process in found:
            with contextlib.suppress(psutil.Error):  # gone since; psutil checks that the pid is still that process
                process.kill()
        psutil.wait_procs(found, timeout=1)
    if uids:
        log.warning("processes of job uids %s still run after %d rounds of SIGKILL", sorted(uids), SWEEPS)


def remove_files_of(uids: Collection[int], directory: Path) -> None:
    """Remove what ``uids`` own directly in ``directory`` (shared memory a job made and left)."""
    if not uids:
        return
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return  # no such directory here
    for entry in entries:
        with contextlib.suppress(OSError):  # removed since
            if entry.stat(follow_symlinks=False).st_uid not in uids:
                continue
            if entry.is_dir(follow_symlinks=False):
                _remove_tree(Path(entry.path))
            else:
                os.unlink(entry.path)


def _remove_tree(path: Path) -> None:
    def report(function: object, failed: str, exc_info: object) -> None:
        # e.g. a directory the job made read-only, when the agent is not root: leave it, say so
        log.warning("cannot remove %s from a job's working directory", failed)

    shutil.rmtree(path, onerror=report)
